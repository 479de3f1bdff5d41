"""Features of a prepared dataset for the training backends: phonemes, spectrograms + pitch, voice prints.

Each is a step (`step(workspace, params, report) -> result`) over the kept clips of `dataset/clips.json`
that writes under `_work/features/`. What each backend (`params["backend"]`) uses:

- piper: `piper.train` phonemizes the texts and computes spectrograms itself, so nothing here feeds it
  directly; the text features run anyway because they are Piper's own phonemes (espeak-ng through
  `piper.phonemize_espeak`, the same ids): every transcript is checked to phonemize, and a clip whose
  phonemes per second are far from the rest flags a transcript that does not match its audio.
- kokoro_fit: speaker vectors only (the fit matches a voice print).
- gpt_sovits: all of them, plus semantic tokens from GPT-SoVITS's own HuBERT model.

Speaker vectors run for every backend: clips by another speaker spoil any voice.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from studio.errors import NotFound
from studio.services.speaker import SpeakerEncoder, similarity
from studio.services.training.common import StepReport, StepSkipped, Workspace
from studio.services.training.dataset import load_clips
from studio.tasks.runner import TaskFailed

BACKENDS = ("kokoro_fit", "piper", "gpt_sovits")
N_FFT, HOP, N_MELS = 1024, 256, 80  # VITS's (and Piper's) spectrogram settings
SPEAKER_OUTLIER = (
    0.75  # similarity to the dataset's voice below this: likely someone else (same voice ~0.85-0.95)
)
RATE_OUTLIER = 1.8  # phonemes per second this many times off the median: the text may not match the audio


def _backend(params: dict[str, Any]) -> str:
    backend = str(params.get("backend", "piper"))
    if backend not in BACKENDS:
        raise TaskFailed(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    return backend


def _kept_clips(workspace: Workspace) -> list[dict[str, Any]]:
    try:
        clips = [c for c in load_clips(workspace) if not c["dropped"]]
    except NotFound as error:
        raise TaskFailed(error.message) from None
    if not clips:
        raise TaskFailed("every clip is dropped: keep some while proofreading, or add recordings")
    return clips


def _features_dir(workspace: Workspace) -> Path:
    folder = workspace.work / "features"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def extract_text_features(workspace: Workspace, params: dict[str, Any], report: StepReport) -> dict[str, Any]:
    """Piper's phonemes and phoneme ids per clip -> features/text.json; flags texts that do not fit."""
    backend = _backend(params)
    if backend == "kokoro_fit":
        raise StepSkipped("kokoro_fit fits a voice to the audio alone: it uses no phonemes")
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP, phonemes_to_ids
    from piper.phonemize_espeak import EspeakPhonemizer

    voice = str(params.get("espeak_voice", "en-us"))
    clips = _kept_clips(workspace)
    phonemizer = EspeakPhonemizer()
    features: dict[str, dict[str, Any]] = {}
    unknown: set[str] = set()
    for index, clip in enumerate(clips):
        report.step_progress(index / len(clips))
        try:
            sentences = phonemizer.phonemize(voice, clip["text"])
        except RuntimeError as error:
            raise TaskFailed(
                f"espeak-ng cannot phonemize with voice {voice!r} ({error}): set params.espeak_voice"
            ) from None
        phonemes = [p for sentence in sentences for p in sentence]
        unknown |= {p for p in phonemes if p not in DEFAULT_PHONEME_ID_MAP}
        ids = [i for sentence in sentences for i in phonemes_to_ids(sentence)]  # as piper.train joins them
        features[clip["id"]] = {
            "phonemes": "".join(phonemes),
            "phoneme_ids": ids,
            "per_second": round(len(phonemes) / clip["duration"], 2),
        }
    _features_dir(workspace).joinpath("text.json").write_text(
        json.dumps(features, ensure_ascii=False), "utf-8"
    )
    rates = np.array([f["per_second"] for f in features.values()])
    median = float(np.median(rates))
    suspect = [
        clip_id
        for clip_id, f in features.items()
        if f["per_second"] == 0 or abs(math.log(f["per_second"] / median)) > math.log(RATE_OUTLIER)
    ]
    report.log(
        f"{sum(len(f['phonemes']) for f in features.values())} phonemes, median {median:.1f} per second"
    )
    if suspect:
        report.log(f"texts that may not match their audio (odd speaking rate): {', '.join(suspect)}")
    if unknown:
        report.log(f"phonemes Piper's id map lacks (left out in training): {' '.join(sorted(unknown))}")
    report.step_progress(1.0)
    return {
        "clips": len(features),
        "phonemes": int(sum(len(f["phonemes"]) for f in features.values())),
        "phonemes_per_second": round(median, 2),
        "suspect": suspect,
        "unknown_phonemes": sorted(unknown),
    }


def extract_audio_features(
    workspace: Workspace, params: dict[str, Any], report: StepReport
) -> dict[str, Any]:
    """Log-mel spectrogram and F0 per clip -> features/<id>.npz (GPT-SoVITS only)."""
    backend = _backend(params)
    if backend == "piper":
        raise StepSkipped("piper.train computes its own spectrograms from dataset/wavs")
    if backend == "kokoro_fit":
        raise StepSkipped("kokoro_fit uses speaker vectors only")
    import librosa
    import pyworld

    clips = _kept_clips(workspace)
    folder = _features_dir(workspace)
    frames = voiced = 0
    voiced_f0: list[np.ndarray] = []
    for index, clip in enumerate(clips):
        report.step_progress(index / len(clips))
        audio, rate = sf.read(workspace.dataset / clip["file"], dtype="float32")
        mel = librosa.feature.melspectrogram(
            y=audio, sr=rate, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_mels=N_MELS
        )
        log_mel = np.log(np.maximum(mel, 1e-5)).astype(np.float32)
        signal = audio.astype(np.float64)
        f0, times = pyworld.dio(signal, rate, frame_period=HOP / rate * 1000)
        f0 = pyworld.stonemask(signal, f0, times, rate).astype(np.float32)
        f0 = np.pad(f0, (0, max(0, log_mel.shape[1] - len(f0))))[
            : log_mel.shape[1]
        ]  # one value per mel frame
        np.savez_compressed(folder / f"{clip['id']}.npz", log_mel=log_mel, f0=f0)
        frames += log_mel.shape[1]
        voiced += int(np.count_nonzero(f0))
        voiced_f0.append(f0[f0 > 0])
    f0_all = np.concatenate(voiced_f0)
    median_f0 = float(np.median(f0_all)) if f0_all.size else 0.0
    report.log(f"{frames} frames, {voiced / max(frames, 1):.0%} voiced, median F0 {median_f0:.0f} Hz")
    report.step_progress(1.0)
    return {
        "clips": len(clips),
        "frames": frames,
        "voiced_ratio": round(voiced / max(frames, 1), 3),
        "median_f0_hz": round(median_f0, 1),
    }


@functools.cache
def _speaker_encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


def extract_speaker_vectors(
    workspace: Workspace, params: dict[str, Any], report: StepReport
) -> dict[str, Any]:
    """A voice print per clip and the dataset's (features/speaker.npy); reports clips by someone else."""
    _backend(params)
    threshold = float(params.get("outlier_similarity", SPEAKER_OUTLIER))
    clips = _kept_clips(workspace)
    encoder = _speaker_encoder()
    embeddings = []
    for index, clip in enumerate(clips):
        report.step_progress(index / len(clips))
        audio, rate = sf.read(workspace.dataset / clip["file"], dtype="float32")
        embeddings.append(encoder.embed(audio, rate))
    vectors = np.stack(embeddings)

    def centre(rows: np.ndarray) -> np.ndarray:
        mean = rows.mean(axis=0)
        return mean / np.linalg.norm(mean)

    mean = centre(vectors)
    scores = np.array([similarity(v, mean) for v in vectors])
    if (scores >= threshold).any():  # the voice of the dataset without the odd ones out
        mean = centre(vectors[scores >= threshold])
        scores = np.array([similarity(v, mean) for v in vectors])
    folder = _features_dir(workspace)
    np.save(folder / "speaker.npy", mean.astype(np.float32))
    np.savez(folder / "speaker_clips.npz", ids=np.array([c["id"] for c in clips]), embeddings=vectors)
    outliers = [
        {"id": clip["id"], "similarity": round(float(score), 3), "source": clip["source"]}
        for clip, score in zip(clips, scores, strict=True)
        if score < threshold
    ]
    report.log(f"speaker similarity to the dataset's voice: median {np.median(scores):.3f}")
    if outliers:
        report.log(
            "clips that sound like another speaker (drop them while proofreading): "
            + ", ".join(f"{o['id']} ({o['similarity']:.2f})" for o in outliers)
        )
    report.step_progress(1.0)
    return {
        "clips": len(clips),
        "median_similarity": round(float(np.median(scores)), 3),
        "threshold": threshold,
        "outliers": outliers,
    }


def extract_semantic_features(
    workspace: Workspace, params: dict[str, Any], report: StepReport
) -> dict[str, Any]:
    """Semantic tokens (GPT-SoVITS's HuBERT): only GPT-SoVITS uses them, and only its own models make them."""
    backend = _backend(params)
    if backend != "gpt_sovits":
        raise StepSkipped(f"{backend} does not use semantic tokens (GPT-SoVITS only)")
    raise TaskFailed(
        "semantic tokens need GPT-SoVITS's pretrained HuBERT and s2G models, which this install does not "
        "ship: set GPT-SoVITS up under weights/ (its engine status says what is missing)"
    )
