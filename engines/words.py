"""Words and their phonemes, for engines that speak phonemes (Kokoro, Piper).

A sentence's written words (`engines.text.spoken_words`) are phonemized together, as the G2P reads
a sentence (espeak's cross-word reading: "of the" -> "ʌvðə", the weak forms of "a" and "to"), and
the result is cut into words where each word phonemized alone says its phonemes end. An
overridden word then gets the override's phonemes in place of its own. The result (`PhonemePlan`)
is the phoneme string the engine speaks and where each word is in it, so the phonemes' times
(`PhonemeSpan`) give the words' times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import pairwise

from engines.base import PhonemeSpan, WordSpan
from engines.text import SpokenWord

_MARKS = frozenset(" ,.!?;:—…\"'()-“”«»¡¿")  # punctuation in phoneme strings: no sound of its own
_SNAP = 2  # a cut this near a space in the run moves to that space


@dataclass(frozen=True)
class PhonemePlan:
    """The phonemes an engine speaks for a sentence, and each word's part of them."""

    phonemes: str
    words: tuple[SpokenWord, ...]
    spans: tuple[tuple[int, int], ...]  # per word: [start, end) in `phonemes`


def plan_phonemes(
    words: Sequence[SpokenWord],
    g2p: Callable[[str], str],
    pronunciations: Mapping[str, str],
    keep: Callable[[str], str] = lambda phonemes: phonemes,
) -> PhonemePlan:
    """The phonemes for `words`: `g2p` (text -> phonemes) of the whole sentence, cut into words,
    with `pronunciations[word]` (by its lower-case written form) in place of an overridden word's
    (the sentence is still read whole, so its neighbours keep the reading it gives them); `keep`
    filters phonemes to those the engine knows, so the plan is exactly what it speaks."""
    if not words:
        return PhonemePlan("", (), ())
    whole = keep(g2p(" ".join(word.text for word in words))).strip()
    alone = [keep(g2p(word.text)).strip() for word in words] if len(words) > 1 else [whole]
    out, spans, last = [], [], 0
    for word, (start, end) in zip(words, _cut(whole, alone), strict=True):
        out.append(whole[last:start])
        piece, marks = whole[start:end], ""
        override = pronunciations.get(word.written.lower())
        if override is not None:
            marks = piece[len(piece.rstrip("".join(_MARKS))) :]  # the punctuation it ends with stays
            piece = keep(override.strip()) + marks
        at = sum(map(len, out))
        spans.append((at, at + len(piece) - len(marks)))
        out.append(piece)
        last = end
    out.append(whole[last:])
    return PhonemePlan("".join(out), tuple(words), tuple(spans))


def joined_plans(plans: Sequence[PhonemePlan]) -> PhonemePlan:
    """Plans of consecutive pieces of a sentence as one, their phonemes joined by spaces."""
    phonemes, words, spans = "", [], []
    for plan in plans:
        if not plan.phonemes:
            continue
        offset = len(phonemes) + (1 if phonemes else 0)
        phonemes = f"{phonemes} {plan.phonemes}" if phonemes else plan.phonemes
        words += plan.words
        spans += [(start + offset, end + offset) for start, end in plan.spans]
    return PhonemePlan(phonemes, tuple(words), tuple(spans))


def _cut(run: str, alone: Sequence[str]) -> list[tuple[int, int]]:
    """Each word's [start, end) in `run` (the words' phonemes read together), placed where the
    words' phonemes read one by one (`alone`) line up with it (diff of the two without spaces)."""
    solid = [i for i, ch in enumerate(run) if not ch.isspace()]  # run index of each non-space
    joined = "".join(piece.replace(" ", "") for piece in alone)
    ops = SequenceMatcher(None, joined, "".join(run[i] for i in solid), autojunk=False).get_opcodes()
    matched = [False] * (len(joined) + 1)  # whether joined[i] is in a block equal in both
    for tag, i1, i2, _, _ in ops:
        if tag == "equal":
            matched[i1:i2] = [True] * (i2 - i1)

    def where(at: int) -> int:
        """The position in `solid` that position `at` of `joined` lines up with."""
        for _, i1, i2, j1, j2 in ops:
            if i1 <= at < i2 or (at == i2 == len(joined)):
                return j1 + round((at - i1) * (j2 - j1) / max(i2 - i1, 1))
        return len(solid)

    bounds, at = [0], 0
    for piece in alone[:-1]:
        at += len(piece.replace(" ", ""))
        cut = min(max(where(at), bounds[-1]), len(solid))
        sure = at > 0 and matched[at - 1] and matched[at]  # both sides line up: keep it ("ʌv|ðə")
        bounds.append(cut if sure else _snapped(solid, cut, bounds[-1]))
    bounds.append(len(solid))
    spans = []
    for start, end in pairwise(bounds):
        if start >= end:
            spans.append((solid[start] if start < len(solid) else len(run),) * 2)
        else:
            spans.append((solid[start], solid[end - 1] + 1))
    return spans


def _snapped(solid: list[int], cut: int, floor: int) -> int:
    """`cut` (an index into `solid`) moved to the nearest word gap of `run` within `_SNAP`."""
    for distance in range(_SNAP + 1):
        for candidate in (cut - distance, cut + distance):
            if floor < candidate < len(solid) and solid[candidate] - solid[candidate - 1] > 1:
                return candidate
    return cut


def word_times(plan: PhonemePlan, spoken: Sequence[PhonemeSpan]) -> tuple[WordSpan, ...]:
    """Each word of `plan` with when it is said: from its first sounding phoneme's start to its last
    one's end in `spoken` (the engine's phoneme times, in the plan's order). A word with no
    phoneme found there (no sound of its own) gets an empty span where the one before it ended."""
    found: list[int | None] = [None] * len(plan.phonemes)
    next_at = 0
    for k, ch in enumerate(plan.phonemes):
        if ch.isspace():
            continue
        for look in range(next_at, min(next_at + 4, len(spoken))):  # a few the engine added or dropped
            if spoken[look].phoneme == ch:
                found[k], next_at = look, look + 1
                break
    out: list[WordSpan] = []
    last_end = 0.0
    for word, (start, end) in zip(plan.words, plan.spans, strict=True):
        hits = [
            found[k] for k in range(start, end) if found[k] is not None and plan.phonemes[k] not in _MARKS
        ]
        if hits:
            first, last = spoken[hits[0]], spoken[hits[-1]]  # type: ignore[index]
            out.append(WordSpan(word.written, word.spoken, first.start, max(last.end, first.start)))
            last_end = out[-1].end
        else:
            out.append(WordSpan(word.written, word.spoken, last_end, last_end))
    return tuple(out)
