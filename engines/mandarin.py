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
from collections.abc import Callable
from typing import Any

_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z'\-]*(?:\s+[A-Za-z][A-Za-z'\-]*)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_MONEY = re.compile(r"([¥￥$€£])\s?(\d+(?:\.\d+)?)")
_CURRENCY = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")


def normalize_mandarin(text: str) -> str:
    """Digits, dates, times, money, percentages and units read out in Chinese characters."""
    text = _THOUSANDS.sub("", text)
    text = _MONEY.sub(lambda m: f"{m.group(2)}{_CURRENCY[m.group(1)]}", text)
    return "".join(_normalizer().normalize(text))


@functools.cache
def _normalizer() -> Any:
    from misaki.zh_normalization.text_normalization import TextNormalizer

    return TextNormalizer()


class MandarinG2P:
    """Callable: one Mandarin sentence -> a Kokoro phoneme string (for `is_phonemes=True`)."""

    def __init__(self, english: Callable[[str], str]) -> None:
        from misaki.zh import ZHG2P

        self._zh = ZHG2P()  # the version Kokoro v1.0's Mandarin voices were trained with
        self._english = english
        self._lock = threading.Lock()  # jieba's lazy dictionary load is not thread-safe

    def __call__(self, text: str) -> str:
        text = normalize_mandarin(text)
        pieces, last = [], 0
        with self._lock:
            for latin in _LATIN_RUN.finditer(text):
                pieces.append(self._han(text[last : latin.start()]))
                # "MegaTTS" -> "Mega TTS": espeak then spells the capitals as letters
                pieces.append(self._english(_CAMEL.sub(" ", latin.group(0))).strip())
                last = latin.end()
            pieces.append(self._han(text[last:]))
        return " ".join(piece for piece in pieces if piece)

    def _han(self, text: str) -> str:
        return self._zh(text)[0].strip() if text.strip() else ""
