"""The quality gate: every sentence of long-form speech is heard back by the bundled ASR, and one the
engine got wrong (words missing, repeated or garbled) is made again, a few times at most.

A task (speech, dialogue, audiobook) makes each sentence through `QualityGate.take`, keeps the
`SentenceCheck`s beside its parts on disk (a resumed task does not check a finished sentence again)
and reports `summary(checks)`: how many were checked and retaken, and each sentence still failing
with its time in the final audio, for a person to listen to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.base import SynthesisOptions
from engines.text import base_language, canonical_language, detect_language
from studio.services.asr import (
    Transcriber,
    edit_distance,
    normalize_chinese,
    normalize_japanese,
    normalize_words,
    transcript_error_rate,
)
from studio.services.script import normalize_text

# Measured on the embedded engines (Kokoro jf_alpha and jm_kumo, Piper joe: 20 English sentences
# each, 4 Mandarin for the Kokoro voices; heard by Whisper base): whole takes score 0 (median) to
# 0.22 in English (jf_alpha: "quiet" heard as "a choir"), 0 to 0.3 in Mandarin (jf_alpha's accented
# 关上 heard as 关闪); takes cut to their first 60% score 0.22 to 1.0 wherever words were lost. A third
# of the words missing is 0.33: 0.25 passes all 60 good English takes and catches that.
DEFAULT_THRESHOLD = 0.25
# One ASR slip in a short sentence is a big rate (1 word in 3: 0.33); a take fails only with at
# least this many wrong words (characters for Chinese and Japanese), unless nothing was heard right.
MIN_ERRORS = 2
# Later takes of a sentence speak a little slower, then faster, by this much more each time.
SPEED_STEP = 0.04
# Piper's voices sample with noise (joe's .onnx.json: noise_scale 0.667, noise_w 0.8): a retake
# lowers both, giving steadier phonemes and durations, where a dropped or slurred word comes from.
PIPER_NOISE = {"noise_scale": 0.667, "noise_w_scale": 0.8}
NOISE_STEP = 0.8


@dataclass
class SentenceCheck:
    """What the ASR heard in one sentence's kept take, and whether it passed."""

    index: int  # the sentence's place in its piece of work
    text: str  # what should be said
    heard: str  # what the ASR heard (of the kept take)
    error_rate: float  # of the kept take (WER for Latin, CER for CJK: QualityGate.error_rate)
    takes: int  # how many takes were made (1: passed first time)
    passed: bool
    start: float | None = None  # seconds into the final audio, filled by the caller once known

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class QualityGate:
    """Makes a sentence, hears it, and makes it again while the ASR hears too many wrong words:
    at most `max_takes` takes, keeping the best one. A take fails above `threshold` (the error rate
    after the studio's text normalisation, so "40" and "forty" agree) with at least MIN_ERRORS
    words wrong, or with nothing heard right."""

    def __init__(
        self, transcriber: Transcriber, threshold: float = DEFAULT_THRESHOLD, max_takes: int = 3
    ) -> None:
        self.transcriber = transcriber
        self.threshold = threshold
        self.max_takes = max(1, max_takes)

    def take(
        self,
        index: int,
        text: str,
        language: str | None,
        make: Callable[[int], tuple[np.ndarray, int]],
    ) -> tuple[np.ndarray, int, SentenceCheck]:
        """make(attempt) -> (audio, sample_rate); attempt 0 is the normal take, later attempts vary.
        Returns the kept take (the best by error rate) and its check."""
        spoken_in = canonical_language(language) or detect_language(text)
        best: tuple[np.ndarray, int, str, float] | None = None
        takes = 0
        while takes < self.max_takes:
            audio, rate = make(takes)
            takes += 1
            if not len(audio):  # nothing the engine could read (e.g. only symbols): nothing to hear
                if best is None:
                    return audio, rate, SentenceCheck(index, text, "", 0.0, takes, True)
                continue
            heard = self.transcriber.transcribe(audio, rate, spoken_in).text
            error = self.error_rate(text, heard, spoken_in)
            if best is None or error < best[3]:
                best = (audio, rate, heard, error)
            if self.passes(text, error, spoken_in):
                break
        assert best is not None
        audio, rate, heard, error = best
        return (
            audio,
            rate,
            SentenceCheck(index, text, heard, error, takes, self.passes(text, error, spoken_in)),
        )

    def error_rate(self, text: str, heard: str, language: str) -> float:
        """How wrong what was heard is, rounded to 3 places: transcript_error_rate with both sides
        normalised as the studio normalises text for engines (numbers, money, titles spelled out);
        for Chinese a CER on each character's toneless syllable."""
        if base_language(language) == "zh":
            # Kokoro's voices often miss a Mandarin tone, and Whisper then writes a homophone (书 as
            # 树, 遍 as 边: 4 of 10 characters "wrong" in a whole, clear take). A retake does not fix
            # a tone; what the gate is for, syllables missing, repeated or garbled, shows in sounds.
            expected, got = _syllables(text), _syllables(heard)
            return round(edit_distance(expected, got) / len(expected) if expected else float(bool(got)), 3)
        rate = transcript_error_rate(
            normalize_text(text, language), normalize_text(heard, language), language
        )
        return round(rate, 3)

    def passes(self, text: str, error_rate: float, language: str) -> bool:
        """At or under the threshold; over it, still passed for a single slip in a short sentence."""
        if error_rate <= self.threshold:
            return True
        errors = round(error_rate * _units(normalize_text(text, language), language))
        return errors < MIN_ERRORS and error_rate < 1.0


def _units(text: str, language: str) -> int:
    """How many items the error rate counts in `text`: words, or characters for Chinese/Japanese."""
    family = base_language(language)
    if family == "zh":
        return len(_syllables(text))
    if family == "ja":
        return len(normalize_japanese(text))
    return len(normalize_words(text))


def _syllables(text: str) -> list[str]:
    """Chinese text as the toneless syllables of its characters (other runs as they are)."""
    from pypinyin import lazy_pinyin

    return lazy_pinyin(normalize_chinese(text))


def retake_options(options: SynthesisOptions, attempt: int) -> SynthesisOptions:
    """The SynthesisOptions for another take: attempt 0 unchanged; later ones vary speed slightly
    (x0.96, x1.04, x0.92, ...) and, for engines with sampling noise, the noise."""
    if attempt <= 0:
        return options
    # A deterministic engine (Kokoro) says the same thing again for the same input: a slightly
    # different speed changes every duration, and with it where a word could be dropped or slurred.
    step = (attempt + 1) // 2
    factor = 1 - SPEED_STEP * step if attempt % 2 else 1 + SPEED_STEP * step
    extra = dict(options.extra)
    # Piper reads these keys (others ignore them): less noise each time, from the user's own values.
    for key, default in PIPER_NOISE.items():
        given = extra.get(key)
        base = given if isinstance(given, int | float) and not isinstance(given, bool) else default
        extra[key] = round(float(base) * NOISE_STEP**attempt, 3)
    if isinstance(extra.get("seed"), int):  # a fixed seed would sample the very same take again
        extra["seed"] = int(extra["seed"]) + attempt  # type: ignore[call-overload]
    return dataclasses.replace(options, speed=round(options.speed * factor, 4), extra=extra)


def summary(checks: list[SentenceCheck], threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """{"checked": n, "retaken": n, "failing": [{index, text, heard, error_rate, start}], "threshold": t}
    for task results."""
    return {
        "checked": len(checks),
        "retaken": sum(1 for check in checks if check.takes > 1),
        "failing": [
            {
                k: v
                for k, v in check.as_dict().items()
                if k in ("index", "text", "heard", "error_rate", "start")
            }
            for check in checks
            if not check.passed
        ],
        "threshold": threshold,
    }


REPORT_COLUMNS = ["#", "sentence", "heard", "error rate", "takes", "passed", "at (s)"]


def report_rows(report: dict[str, Any]) -> list[list[Any]]:
    """A quality.json's sentences as the rows of a table with REPORT_COLUMNS (the tabs show it)."""
    return [
        [
            s["index"] + 1,
            s["text"],
            s["heard"],
            s["error_rate"],
            s["takes"],
            "yes" if s["passed"] else "NO",
            s["start"],
        ]
        for s in report.get("sentences", [])
    ]
