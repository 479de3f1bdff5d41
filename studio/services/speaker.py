"""Speaker embeddings with resemblyzer's bundled encoder: how alike two voices sound (cosine, 0..1)."""

from __future__ import annotations

import threading

import numpy as np

from studio.audio import resample

ENCODER_RATE = 16000


class SpeakerEncoder:
    """Lazily loaded resemblyzer VoiceEncoder on CPU; thread-safe."""

    def __init__(self) -> None:
        self._encoder = None
        self._lock = threading.Lock()

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        from resemblyzer import VoiceEncoder, preprocess_wav

        wav = preprocess_wav(resample(np.asarray(audio, np.float32), sample_rate, ENCODER_RATE), ENCODER_RATE)
        with self._lock:
            if self._encoder is None:
                self._encoder = VoiceEncoder("cpu", verbose=False)
            return self._encoder.embed_utterance(wav)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
