"""Voice cloning: library voices fitted to their references, and zero-shot speech from a clip.

On CPU a voice is cloned by fitting a Kokoro style to the clip (`voice_fit.py`): "quick" as part of a
request, "thorough" as a task with progress and a live similarity curve. With MegaTTS3's weights and
a GPU, a clip plus its latent is spoken by MegaTTS3 directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
from pydantic import Field

from engines.base import ClipCloner, EngineUnavailable, SynthesisOptions
from engines.cluster import ClusterEngine
from engines.kokoro_onnx import KokoroOnnxEngine
from engines.text import base_language
from studio.errors import BadInput
from studio.services.asr import Transcriber
from studio.services.speaker import SpeakerEncoder
from studio.services.speech import Speech, SpeechRequest, SpeechService
from studio.services.voice_fit import (
    MODES,
    ClusterVoiceFitter,
    FitMode,
    FitResult,
    ProgressCallback,
    VoiceFitter,
    reference_language,
)
from studio.services.voices import RATE, VoiceLibrary, VoiceRecord, as_stored, clean_reference
from studio.space import gpu_duration, on_zero_gpu
from studio.subtitles import Cue
from studio.tasks.configs import TaskConfig
from studio.tasks.runner import TaskContext, TaskKind

CLONE_PREFIX = "clone-"  # zero-shot styles, cached by the clip's hash
FITS_KEPT = 200  # fits cached by clip (half a megabyte each), the least recently used dropped first
PREVIEW_TEXT = {  # by language family: a voice previews in its own language
    "en": "Hello! This is how I sound in the studio. I hope you like it.",
    "zh": "你好！这就是我在工作室里的声音，希望你喜欢。",
    "ja": "こんにちは！これがスタジオでの私の声です。気に入ってもらえたらうれしいです。",
}
THOROUGH_OFF = "thorough voice fitting is turned off on this server (shared use): fit with 'quick' instead"


class VoiceFitConfig(TaskConfig):
    """A "voice_fit" task: fit a library voice's Kokoro style to its reference clip."""

    voice_id: str = Field(description="a library voice")
    mode: Literal["quick", "thorough"] = "thorough"


# What a built-in voice says as its reference clip for engines that clone (MOSS-TTSD).
REFERENCE_LINES = {
    "en": "Hello, it is good to meet you. Let us talk for a little while today.",
    "zh": "你好，很高兴认识你。今天我们来聊一聊吧。",
    "ja": "こんにちは、はじめまして。今日は少しお話ししましょう。",
}


class CloningService:
    def __init__(
        self,
        library: VoiceLibrary,
        speech: SpeechService,
        transcriber: Transcriber,
        cache_dir: Path,
        max_upload_bytes: int,
        allow_thorough_fit: bool = True,
        fit_modes: dict[str, FitMode] = MODES,
    ) -> None:
        self.library = library
        self.allow_thorough_fit = allow_thorough_fit
        self.fit_modes = fit_modes
        self.speech = speech
        self.transcriber = transcriber
        self.cache_dir = cache_dir
        self.max_upload_bytes = max_upload_bytes
        self._fitter: VoiceFitter | ClusterVoiceFitter | None = None
        self._clones: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def fitter(self) -> VoiceFitter | ClusterVoiceFitter:
        """What fits library voices: here, or on the cluster's nodes where Kokoro speaks there."""
        with self._lock:
            if self._fitter is None:
                engine = self.speech.registry.engine("kokoro")
                kokoro = engine.local if isinstance(engine, ClusterEngine) else engine
                assert isinstance(kokoro, KokoroOnnxEngine)
                self._fitter = VoiceFitter(kokoro, SpeakerEncoder(), self.transcriber, self.fit_modes)
                if isinstance(engine, ClusterEngine):
                    self._fitter = ClusterVoiceFitter(
                        engine.cluster,
                        engine,
                        self.cache_dir / "whisper",
                        self._fitter.grid(),
                        self.fit_modes,
                    )
            return self._fitter

    def fit(
        self,
        reference: np.ndarray,
        sample_rate: int,
        mode: str,
        progress: ProgressCallback | None = None,
        language: str | None = None,
    ) -> FitResult:
        """The fitter's result for this clip, mode and language; a clip fitted the same way before
        (the search is seeded and runs a fixed number of trials) answers from the cache at once.
        `language` is the clip's (a studio code), heard in its first 30 s when None."""
        language = reference_language(self.transcriber, reference, sample_rate, language)
        key = hashlib.sha256(
            np.ascontiguousarray(reference, np.float32).tobytes()
            + f"|{sample_rate}|{self.fit_modes[mode]}|{language}".encode()
        ).hexdigest()[:24]
        path = self.cache_dir / "fits" / f"{key}.npz"
        if path.exists():
            with np.load(path) as stored:
                meta = json.loads(str(stored["meta"]))
                result = FitResult(style=stored["style"], **meta | {"reused": True})
            os.utime(path)  # recently used
            result.curve = [(int(trial), float(sim)) for trial, sim in result.curve]
            if progress:
                progress(100, f"fitted {mode} before: the same clip's result reused", result.curve)
            return result
        result = self.fitter.fit(reference, sample_rate, mode, progress=progress, language=language)
        meta = {k: v for k, v in dataclasses.asdict(result).items() if k != "style"}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{key}.{os.getpid()}.{threading.get_ident()}.partial.npz")
        np.savez(partial, style=result.style, meta=np.array(json.dumps(meta)))
        partial.replace(path)
        keep_newest(path.parent, "*[0-9a-f].npz", FITS_KEPT)
        return result

    def style_for(self, voice_id: str) -> np.ndarray | None:
        """Kokoro's hook for voices beyond its packs: fitted library voices and zero-shot clones."""
        if voice_id.startswith(CLONE_PREFIX):
            cached = self._clones.get(voice_id)
            return cached if cached is not None else self._load_clone(voice_id)
        return self.library.style(voice_id)

    def reference_clip(self, voice: str, language: str | None = None) -> tuple[Path, str]:
        """A clip of `voice` and its transcript, for engines that clone from one (MOSS-TTSD): a library
        voice's own reference recording; any other voice (built-in, blend) says a line in `language`
        (its own language when it cannot speak that one), made once and cached."""
        record = self.library.get(voice)
        if record is not None and record.transcript:
            return self.library.root / voice / "reference.wav", record.transcript
        engine, voice_id = self.speech.resolve(voice)
        speaks = self.speech.registry.engine(engine).voice_languages(voice_id)
        wanted = base_language(language) if language else None
        base = (
            wanted
            if wanted and any(base_language(own) == wanted for own in speaks)
            else base_language(speaks[0])
        )
        line = REFERENCE_LINES.get(base, REFERENCE_LINES["en"])
        digest = hashlib.sha256(f"{voice}|{base}|{line}".encode()).hexdigest()[:16]
        path = self.cache_dir / "references" / f"{digest}.wav"
        if not path.is_file():
            speech = self.speech.synthesize(
                SpeechRequest(line, voice, language=base if base != "en" else None)
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial.wav")
            sf.write(partial, speech.audio, speech.sample_rate, subtype="PCM_16")
            partial.replace(path)
        return path, line

    # ---- library voices ----------------------------------------------------------------------
    def fit_voice(self, voice_id: str, mode: str, context: TaskContext | None = None) -> VoiceRecord:
        if mode not in self.fit_modes:
            raise BadInput(f"mode must be one of {', '.join(self.fit_modes)}", "bad_mode")
        if mode == "thorough" and not self.allow_thorough_fit:
            raise BadInput(THOROUGH_OFF, "thorough_fit_disabled")
        record = self.library.require(voice_id)
        reference = self.library.reference(voice_id)
        progress = None
        if context:
            curve_file = context.folder / "curve.json"

            def progress(percent: float, step: str, curve: list[tuple[int, float]]) -> None:
                curve_file.write_text(json.dumps(curve))
                context.progress(percent, step)

        result = self.fit(reference, RATE, mode, progress, record.language)
        if context:
            context.log(_describe(result))
        record = self.library.save_style(voice_id, result.style, fit_report(result, mode))
        self.write_preview(voice_id)
        return record

    def quick_fit(self, voice_id: str, progress: ProgressCallback | None = None) -> VoiceRecord:
        """Fit a library voice "quick" within the caller's request (no task): `progress(percent, step,
        curve)` hears each trial, `curve` being the (trial, best similarity so far) pairs."""
        record = self.library.require(voice_id)
        reference = self.library.reference(voice_id)
        result = self.fit(reference, RATE, "quick", progress, record.language)
        record = self.library.save_style(voice_id, result.style, fit_report(result, "quick"))
        self.write_preview(voice_id)
        return record

    def write_preview(self, voice_id: str) -> None:
        """The library voice's preview clip (what the library lists play), spoken with its fitted style
        in its language."""
        language = self.library.require(voice_id).language
        text = PREVIEW_TEXT[base_language(language)]
        preview = self.speech.synthesize(
            SpeechRequest(text=text, voice=voice_id, engine="kokoro", language=language)
        )
        sf.write(
            self.library.root / voice_id / "preview.wav", preview.audio, preview.sample_rate, subtype="PCM_16"
        )

    def task_kind(self) -> TaskKind:
        return TaskKind("voice_fit", self._run_fit_task, config=VoiceFitConfig, prepare=self.prepare_fit)

    def prepare_fit(self, config: VoiceFitConfig) -> VoiceFitConfig:
        """A fit task's config checked: the voice exists, and thorough fits are allowed here."""
        if config.mode == "thorough" and not self.allow_thorough_fit:
            raise BadInput(THOROUGH_OFF, "thorough_fit_disabled")
        self.library.require(config.voice_id)
        return config

    def _run_fit_task(self, context: TaskContext) -> dict[str, Any]:
        config: VoiceFitConfig = context.request
        record = self.fit_voice(config.voice_id, config.mode, context)
        return {"voice_id": config.voice_id, **record.fit}

    # ---- zero-shot -----------------------------------------------------------------------------
    def synthesize_from_clip(
        self,
        text: str,
        clip: bytes,
        filename: str,
        speed: float = 1.0,
        latent: bytes | None = None,
        language: str | None = None,
    ) -> tuple[Speech, dict[str, Any]]:
        """Speech in the voice of `clip`: a zero-shot cloning engine (MegaTTS3) when one can run and
        the clip's latent is given, else a quick fit."""
        self.speech.validate(SpeechRequest(text=text, speed=speed, language=language))
        cloner = self._cloner() if latent is not None else None
        if cloner is not None and latent is not None:
            return self._clone(cloner, text, clip, speed, latent)
        voice_id = CLONE_PREFIX + hashlib.sha256(clip).hexdigest()[:20]
        info: dict[str, Any] = {"engine": "kokoro", "method": "quick fit", "cached": True}
        if self.style_for(voice_id) is None:
            reference = clean_reference(clip, filename, self.max_upload_bytes)
            # Fitted as the library would store the clip (16-bit), so the two share one fit.
            result = self.fit(as_stored(reference.audio), RATE, "quick")
            self._save_clone(voice_id, result.style)
            info |= {"cached": result.reused, **fit_report(result, "quick"), "warnings": reference.warnings}
        return self.speech.synthesize(
            SpeechRequest(text=text, voice=voice_id, engine="kokoro", speed=speed, language=language)
        ), info

    def _cloner(self) -> ClipCloner | None:
        """The zero-shot cloning engine that can run here, if any."""
        try:
            return self.speech.registry.capable(ClipCloner)
        except EngineUnavailable:
            return None

    @on_zero_gpu(lambda self, cloner, text, *_: clone_gpu_seconds(text))
    def _clone(
        self, cloner: ClipCloner, text: str, clip: bytes, speed: float, latent: bytes
    ) -> tuple[Speech, dict[str, Any]]:
        folder = self.cache_dir / "clone_inputs"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(clip).hexdigest()[:20]
        wav, npy = folder / f"{digest}.wav", folder / f"{digest}.npy"
        wav.write_bytes(clip)
        npy.write_bytes(latent)
        engine = self.speech.registry.capable(ClipCloner, cloner.info.name, load=True)
        audio = engine.clone(text, wav, npy, SynthesisOptions(speed=speed))
        rate = engine.info.sample_rate
        return Speech(audio, rate, [Cue(0.0, len(audio) / rate, text)]), {
            "engine": engine.info.name,
            "method": "zero-shot",
        }

    def _save_clone(self, voice_id: str, style: np.ndarray) -> None:
        folder = self.cache_dir / "clones"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{voice_id}.npy", style)
        with self._lock:
            self._clones[voice_id] = style

    def _load_clone(self, voice_id: str) -> np.ndarray | None:
        path = self.cache_dir / "clones" / f"{voice_id}.npy"
        if not path.exists() or not voice_id[len(CLONE_PREFIX) :].isalnum():
            return None
        style = np.load(path)
        with self._lock:
            self._clones[voice_id] = style
        return style


def clone_gpu_seconds(text: str) -> int:
    """ZeroGPU duration for one MegaTTS3 clone: grows with the text."""
    return gpu_duration("clone", len(text))


def fit_report(result: FitResult, mode: str) -> dict[str, Any]:
    """What the library keeps about a fit, and what the UI shows next to the default voice."""
    return {
        "mode": mode,
        "similarity": round(result.check["similarity"], 4),
        "wer": round(result.check["wer"], 4),
        "baseline_voice": result.baseline_voice,
        "language": result.language,  # of the check sentences; "wer" is their CER in Chinese and Japanese
        "baseline_similarity": round(result.check["baseline_similarity"], 4),
        "baseline_wer": round(result.check["baseline_wer"], 4),
        "probe_similarity": round(result.similarity, 4),
        "start_voice": result.start_voice,
        "trials": result.trials,
        "seconds": round(result.seconds, 1),
        "reused": result.reused,
    }


def _describe(result: FitResult) -> str:
    check = result.check
    took = f"{result.seconds:.1f} s"
    how = f"reused the same clip's earlier fit (made in {took})" if result.reused else f"fitted in {took}"
    return (
        f"{how}, {result.trials} trials ({result.accepted} kept) from {result.start_voice}; "
        f"held-out similarity {check['similarity']:.3f} (nearest built-in {result.baseline_voice}: "
        f"{check['baseline_similarity']:.3f}), WER {check['wer']:.2f} vs {check['baseline_wer']:.2f}"
    )


def keep_newest(folder: Path, pattern: str, count: int) -> None:
    """Remove all but the `count` most recently used files matching `pattern` in `folder`."""

    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile by another fit's cleanup
            return float("inf")

    for stale in sorted(folder.glob(pattern), key=used, reverse=True)[count:]:
        stale.unlink(missing_ok=True)
