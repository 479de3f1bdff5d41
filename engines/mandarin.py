"""Mandarin text -> the phonemes Kokoro-82M learned Mandarin from (misaki's zh G2P).

Kokoro's Mandarin voices were trained on misaki's pinyin-based phonemes, not espeak's `cmn`, so
the embedded Kokoro speaks Mandarin through this front end: numbers, dates, money and units are
read out in Chinese first (misaki's text normaliser), Han runs become misaki phonemes, and Latin
words inside a Chinese sentence ("MegaTTS3", "AI") are read as English by the given phonemizer.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from engines.text import SpokenWord
from engines.words import PhonemePlan, joined_plans, plan_phonemes

_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z'\-]*(?:\s+[A-Za-z][A-Za-z'\-]*)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_MONEY = re.compile(r"([¥￥$€£])\s?(\d+(?:\.\d+)?)")
_CURRENCY = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")  # any decimal digit but ASCII's: "٣", "३", "𝟑"
_FULL_WIDTH_LATIN = {
    c: c - 0xFEE0 for c in (*range(ord("Ａ"), ord("Ｚ") + 1), *range(ord("ａ"), ord("ｚ") + 1))
}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")


def normalize_mandarin(text: str) -> str:
    """Digits, dates, times, money, percentages and units read out in Chinese characters; Latin
    words stay as written, for the English phonemizer."""
    text = _OTHER_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group(0))), text)  # misaki knows 0-9 only
    text = text.translate(_FULL_WIDTH_LATIN)  # "ＡＩ" -> "AI", as misaki does, so it is kept as a word too
    text = _THOUSANDS.sub("", text)
    text = _MONEY.sub(lambda m: f"{m.group(2)}{_CURRENCY[m.group(1)]}", text)
    # misaki's normaliser drops every space and reads each "m", "s", "h", ... as a unit ("machine" ->
    # "米ac小时ine"), so it only gets the text between Latin words, and units after a number ("5km").
    normalizer, latin_or_unit = _normalizer()
    pieces, last = [], 0
    for latin in latin_or_unit.finditer(text):
        if latin.group("unit") is None:
            pieces += ["".join(normalizer.normalize(text[last : latin.start()])), latin.group(0)]
            last = latin.end()
    pieces.append("".join(normalizer.normalize(text[last:])))
    return "".join(pieces)


@functools.cache
def _normalizer() -> tuple[Any, re.Pattern[str]]:
    """misaki's normaliser, and a pattern for Latin words or (group "unit") a unit it reads."""
    from misaki.zh_normalization.quantifier import measure_dict
    from misaki.zh_normalization.text_normalization import TextNormalizer

    units = "|".join(re.escape(unit) for unit in sorted(measure_dict, key=len, reverse=True))
    latin_or_unit = re.compile(rf"(?P<unit>(?<=\d)\s*(?:{units})(?![A-Za-z]))|{_LATIN_RUN.pattern}")
    return TextNormalizer(), latin_or_unit


class MandarinG2P:
    """Callable: one Mandarin sentence -> a Kokoro phoneme string (for `is_phonemes=True`); `plan`
    gives the same phonemes with each word's place in them (jieba's words, as misaki reads them)."""

    def __init__(self, english: Callable[[str], str]) -> None:
        from misaki.zh import ZHG2P

        self._zh = ZHG2P()  # the version Kokoro v1.0's Mandarin voices were trained with
        self._english = english
        self._lock = threading.Lock()  # jieba's lazy dictionary load is not thread-safe

    def __call__(self, text: str) -> str:
        return self.plan(text).phonemes

    def plan(self, text: str, pronunciations: Mapping[str, str] | None = None) -> PhonemePlan:
        """The sentence's phonemes and its words: Han words (as jieba cuts them, or a key of
        `pronunciations` found in the text, spoken with its phonemes instead) and Latin runs (one
        word each, read by the English phonemizer)."""
        pronunciations = pronunciations or {}
        text = normalize_mandarin(text)
        plans, last = [], 0
        with self._lock:
            for latin in _LATIN_RUN.finditer(text):
                plans.append(self._han(text[last : latin.start()], pronunciations))
                # "MegaTTS" -> "Mega TTS": espeak then spells the capitals as letters
                word = SpokenWord(latin.group(0), _CAMEL.sub(" ", latin.group(0)))
                plans.append(plan_phonemes([word], self._english, pronunciations, str.strip))
                last = latin.end()
            plans.append(self._han(text[last:], pronunciations))
        return joined_plans(plans)

    def _han(self, text: str, pronunciations: Mapping[str, str]) -> PhonemePlan:
        """misaki's reading of Chinese text (its legacy G2P: jieba words, each read alone), word by
        word, with `pronunciations` for the words that are keys."""
        from misaki.zh import ZHG2P

        if not text.strip():
            return PhonemePlan("", (), ())
        text = ZHG2P.map_punctuation(cn2an_transform(text))
        out, words, spans = "", [], []
        keys = sorted((key for key in pronunciations if _HAN.search(key)), key=len, reverse=True)
        split = re.compile("|".join(map(re.escape, keys))) if keys else None
        for han, other in re.findall(r"([\u4E00-\u9FFF]+)|([^\u4E00-\u9FFF]+)", text):
            if other:
                out += other
                continue
            for i, word in enumerate(_han_words(han, split)):
                phonemes = pronunciations.get(word) or self._zh.word2ipa(word).replace(chr(815), "")
                out += " " if i else ""
                words.append(SpokenWord(word, word))
                spans.append((len(out), len(out) + len(phonemes)))
                out += phonemes
        stripped = len(out) - len(out.lstrip())
        spans = [(start - stripped, end - stripped) for start, end in spans]
        return PhonemePlan(out.strip(), tuple(words), tuple(spans))


def _han_words(han: str, keys: re.Pattern[str] | None) -> list[str]:
    """The words of a run of Han characters: the pronunciation keys in it, jieba's cut between."""
    import jieba

    words, last = [], 0
    for key in keys.finditer(han) if keys else ():
        words += jieba.lcut(han[last : key.start()], cut_all=False) if key.start() > last else []
        words.append(key.group(0))
        last = key.end()
    return words + (jieba.lcut(han[last:], cut_all=False) if last < len(han) else [])


def cn2an_transform(text: str) -> str:
    """Arabic numerals misaki's normaliser left, in Chinese (as misaki's G2P does first)."""
    import cn2an

    return cn2an.transform(text, "an2cn")


_HAN = re.compile(r"[\u4E00-\u9FFF]")
