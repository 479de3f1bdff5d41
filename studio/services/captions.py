"""Captions from word timestamps: speech with each word's times, as JSON words and phrase-level
SRT (cues of a few words, broken at punctuation), for the captioned speech route and the Speech tab.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass

import numpy as np

from engines.base import AudioChunk, WordSpan
from engines.text import is_cjk
from studio.services.speech_cache import CachedSpeech
from studio.subtitles import Cue, to_srt

MAX_CUE_WORDS = 7
MAX_CUE_SECONDS = 3.5
_BREAKS = frozenset(",.;:!?…，。；：！？、")  # a cue ends after a word followed by one of these
_CLOSERS = "\"'”’」』）)》]"


@dataclass(frozen=True)
class Captioned:
    """Speech as one file and where each word is in it (seconds from its start)."""

    data: bytes
    format: str
    sample_rate: int
    duration: float
    words: tuple[WordSpan, ...]
    cues: tuple[Cue, ...]

    @property
    def srt(self) -> str:
        return to_srt(list(self.cues))

    def word_list(self) -> list[dict[str, str | float]]:
        """The words as the captioned route answers them: written, spoken, start, end (ms rounded)."""
        return [
            {"word": w.written, "spoken": w.spoken, "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in self.words
        ]

    def words_json(self) -> str:
        return json.dumps(self.word_list(), ensure_ascii=False, indent=1)

    def to_cached(self) -> CachedSpeech:
        timing = {"words": [astuple(w) for w in self.words], "cues": [astuple(c) for c in self.cues]}
        return CachedSpeech(self.data, self.duration, self.sample_rate, timing)

    @classmethod
    def from_cached(cls, cached: CachedSpeech, fmt: str) -> Captioned:
        words = tuple(WordSpan(*word) for word in cached.timing["words"])
        cues = tuple(Cue(*cue) for cue in cached.timing["cues"])
        return cls(cached.data, fmt, cached.sample_rate, cached.duration, words, cues)


def placed(chunks: Iterable[AudioChunk]) -> tuple[list[AudioChunk], list[WordSpan], list[Cue]]:
    """The chunks of a stream, their words moved to the whole audio's time, and phrase cues (a
    chunk whose engine gives no words is one cue: its sentence)."""
    kept, words, cues = [], [], []
    position = 0.0
    for chunk in chunks:
        kept.append(chunk)
        moved = [word.shifted(position) for word in chunk.words]
        words += moved
        if moved:
            cues += phrase_cues(chunk.text, moved)
        else:
            sounding = np.flatnonzero(chunk.audio)  # after the gap the stream put before it
            lead = sounding[0] / chunk.sample_rate if len(sounding) else 0.0
            cues.append(Cue(position + lead, position + chunk.duration, chunk.text))
        position += chunk.duration
    return kept, words, cues


def phrase_cues(text: str, words: Sequence[WordSpan]) -> list[Cue]:
    """`words` (of the sentence `text`) as cues of at most `MAX_CUE_WORDS` words and
    `MAX_CUE_SECONDS`, each ending at the punctuation that follows a word where there is one."""
    found = _found(text, words)
    cues: list[Cue] = []
    group: list[int] = []

    def close() -> None:
        first, last = group[0], group[-1]
        if found[first] is not None and found[last] is not None:
            start, end = found[first][0], found[last][1]  # type: ignore[index]
            while end < len(text) and (text[end] in _BREAKS or text[end] in _CLOSERS):
                end += 1
            caption = text[start:end].strip()
        else:
            joiner = "" if all(is_cjk(words[i].written) for i in group) else " "
            caption = joiner.join(words[i].written for i in group)
        cues.append(Cue(words[first].start, words[last].end, caption))
        group.clear()

    for i, word in enumerate(words):
        if group and (len(group) == MAX_CUE_WORDS or word.end - words[group[0]].start > MAX_CUE_SECONDS):
            close()
        group.append(i)
        place = found[i]
        if place is not None and text[place[1] : place[1] + 1] in _BREAKS:
            close()
    if group:
        close()
    return cues


def _found(text: str, words: Sequence[WordSpan]) -> list[tuple[int, int] | None]:
    """Where each word is in `text`, searched in order (None: not as written there)."""
    out: list[tuple[int, int] | None] = []
    at = 0
    for word in words:
        start = text.find(word.written, at)
        if start < 0:
            out.append(None)
            continue
        at = start + len(word.written)
        out.append((start, at))
    return out
