"""Voice fitting: a Kokoro style vector that sounds like a reference clip (CPU, no cloning model).

Kokoro's voice is a style array; the shipped packs span a space of timbres. The fitter starts from
the shipped pack or blend whose speech is most like the reference (speaker-embedding cosine with
resemblyzer), then refines it with a (1+1) evolution strategy on one 256-d offset added to every row
of the pack, timbre half first, step size adapted by the one-fifth rule. A step is kept only if it
raises the score AND the bundled Whisper hears the probe sentence no worse than at the start: an
unchecked search trades words for voice. The score is the similarity minus a small penalty for
drifting from the reference's median pitch (pyworld). The method and its measured gains are in
shared/notes/voice-fitting.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyworld

from engines.cluster import ClusterEngine, RayCluster
from engines.gpu import GpuAllocator
from engines.kokoro_onnx import PACKS, KokoroOnnxEngine
from engines.text import base_language, canonical_language
from studio.services.asr import Transcriber, transcript_error_rate
from studio.services.speaker import SpeakerEncoder, similarity

# Sentences the fit speaks, by language family: the reference's language, so the words are checked in
# the language the voice will speak.
PROBES = {
    "en": (
        "The quick brown fox jumps over the lazy dog by the river.",
        "Please call me back when you have a moment this afternoon.",
    ),
    "zh": ("我们明天早上九点在学校门口见面。", "今天下午你有时间的话，请给我打个电话。"),
    "ja": ("茶色の狐が川のそばで犬を飛び越えました。", "今日の午後、時間があるときに電話をください。"),
}
HELD_OUT = (  # the English held-out sentences: the training test's and the voices tab's default
    "We went to the market early and bought fresh bread and fruit.",
    "Could you tell me how to get to the train station from here?",
    "The meeting has been moved to Thursday at three o'clock.",
)
HELD_OUT_BY_LANGUAGE = {
    "en": HELD_OUT,
    "zh": ("我们一早去市场买了新鲜的面包和水果。", "请问从这里怎么去火车站？", "星期四下午三点开会。"),
    "ja": (
        "朝早く市場へ行って、焼きたてのパンと果物を買いました。",
        "ここから駅までの行き方を教えていただけますか。",
        "会議は木曜日の三時に変更になりました。",
    ),
}
PITCH_PENALTY = 0.05  # similarity points per octave away from the reference's median pitch
GRID_SENTENCE = "Hello there, this is a short sentence to hear what my voice sounds like."
GRID_FILE = Path(__file__).resolve().parents[2] / "assets" / "kokoro_blend_grid.npz"


def blend_grid() -> list[str]:
    """Every blend of the shipped packs with weights on a 1/3 grid (35 voices, the 5 packs among them)."""
    packs = list(PACKS)
    names = []
    for weights in itertools.product(range(4), repeat=len(packs)):
        if sum(weights) == 3:
            parts = [f"{pack}*{w}" for pack, w in zip(packs, weights, strict=True) if w]
            names.append("+".join(parts))
    return names


def reference_language(
    transcriber: Transcriber, reference: np.ndarray, sample_rate: int, language: str | None
) -> str:
    """The language the fit speaks and hears its sentences in: `language` as a studio code, or the one
    heard in the reference when None (its first 30 s: Whisper detects on one 30 s window anyway);
    English for a language the fit has no sentences in (the timbre it searches for has no words)."""
    code = (
        canonical_language(language)
        or transcriber.transcribe(reference[: 30 * sample_rate], sample_rate).language
    )
    return code if base_language(code) in PROBES else "en-us"


@dataclass(frozen=True)
class FitMode:
    name: str
    probes: int
    max_trials: int  # the search's length: results do not depend on the machine's speed
    seconds: float  # a safety cap on the search's time, for a machine far slower than expected
    step: float = 0.07


MODES = {
    "quick": FitMode("quick", probes=1, max_trials=14, seconds=180.0),
    "thorough": FitMode("thorough", probes=2, max_trials=110, seconds=900.0),
}


def fit_modes(quick_trials: int = MODES["quick"].max_trials) -> dict[str, FitMode]:
    """MODES with the quick search `quick_trials` long (`Settings.fit_quick_trials`)."""
    return MODES | {"quick": dataclasses.replace(MODES["quick"], max_trials=quick_trials)}


@dataclass
class FitResult:
    style: np.ndarray  # [510, 1, 256] float32, usable wherever Kokoro takes a style
    start_voice: str  # the blend of shipped packs the search started from
    similarity: float  # on the probe sentence(s)
    trials: int
    accepted: int
    seconds: float
    reference_f0: float
    baseline_voice: str  # the shipped pack nearest to the reference
    language: str  # studio code the probes and checks were spoken and heard in (reference_language)
    check: dict[str, float]  # similarity/WER of fitted vs baseline on sentences the search never used
    curve: list[tuple[int, float]] = field(default_factory=list)  # (trial, best similarity so far)
    reused: bool = False  # answered from the cache of fits (CloningService.fit), not searched again


@dataclass(frozen=True)
class Evaluation:
    similarity: float
    score: float
    wer: float  # transcript_error_rate: WER in English, CER in Chinese and Japanese


ProgressCallback = Callable[[float, str, list[tuple[int, float]]], None]


class VoiceFitter:
    """Fits Kokoro styles to references; also measures voices on held-out sentences, honestly."""

    def __init__(
        self,
        kokoro: KokoroOnnxEngine,
        encoder: SpeakerEncoder,
        transcriber: Transcriber,
        modes: dict[str, FitMode] = MODES,
    ) -> None:
        self.kokoro = kokoro
        self.encoder = encoder
        self.transcriber = transcriber
        self.modes = modes
        self._grid: dict[str, np.ndarray] | None = None

    def fit(
        self,
        reference: np.ndarray,
        sample_rate: int,
        mode: str = "quick",
        seed: int = 0,
        progress: ProgressCallback | None = None,
        language: str | None = None,
    ) -> FitResult:
        """A style like the reference's voice; `language` (a studio code) is the reference's, heard in
        it when None."""
        settings = self.modes[mode]
        started = time.monotonic()
        rng = np.random.default_rng(seed)
        language = reference_language(self.transcriber, reference, sample_rate, language)
        target = self.encoder.embed(reference, sample_rate)
        reference_f0 = median_f0(reference, sample_rate)
        probes = PROBES[base_language(language)][: settings.probes]
        report = progress or (lambda percent, step, curve: None)

        def evaluate(style: np.ndarray, check_words: bool) -> Evaluation:
            sims, wers, pitches = [], [], []
            for text in probes:
                audio = self.kokoro.speak(text, style, language=language)
                sims.append(similarity(self.encoder.embed(audio, 24000), target))
                pitches.append(median_f0(audio, 24000))
                if check_words:
                    wers.append(self._error_rate(text, audio, language))
            sim = float(np.mean(sims))
            drift = (
                abs(np.log2(max(np.median(pitches), 1.0) / max(reference_f0, 1.0)))
                if reference_f0 > 0
                else 0.0
            )
            return Evaluation(sim, sim - PITCH_PENALTY * drift, float(np.mean(wers)) if wers else 0.0)

        # 1. Start from the blend whose (precomputed) embedding is nearest the reference: no synthesis.
        grid = self.grid()
        closeness = {name: similarity(embedding, target) for name, embedding in grid.items()}
        start_voice = max(closeness, key=lambda name: closeness[name])
        baseline_voice = max(PACKS, key=lambda pack: closeness[f"{pack}*3"])
        base = self.kokoro.style(start_voice)
        best = evaluate(base, True)
        start_wer = best.wer
        curve = [(0, best.similarity)]
        report(10, f"starting from {start_voice} (similarity {best.similarity:.3f})", curve)

        # 2. (1+1)-ES on an offset broadcast over the pack's rows; timbre half (first 128 dims) first.
        offset = np.zeros(base.shape[-1], np.float32)
        step, trials, accepted = settings.step, 0, 0
        search_started = time.monotonic()
        while trials < settings.max_trials and time.monotonic() - search_started < settings.seconds:
            trials += 1
            dims = 128 if trials <= settings.max_trials // 2 else base.shape[-1]
            proposal = offset.copy()
            proposal[:dims] += rng.normal(0.0, step, dims).astype(np.float32)
            candidate = evaluate(base + proposal, False)
            if candidate.score > best.score:
                checked = evaluate(base + proposal, True)
                if checked.wer <= start_wer + 1e-9:
                    offset, best, accepted = proposal, checked, accepted + 1
                    step = min(step * 1.5, 0.25)
                else:
                    step = max(step * 0.8, 0.02)
            else:
                step = max(step * 0.8, 0.02)
            curve.append((trials, best.similarity))
            percent = 10 + 88 * trials / settings.max_trials
            report(percent, f"trial {trials}, similarity {best.similarity:.3f}", curve)
        style = (base + offset).astype(np.float32)
        report(98, "checking on sentences the search never heard", curve)
        held_out = HELD_OUT_BY_LANGUAGE[base_language(language)]
        sentences = held_out if mode == "thorough" else held_out[:1]
        fitted_sim, fitted_wer = self.held_out(style, reference, sample_rate, sentences, language)
        baseline_sim, baseline_wer = self.held_out(
            self.kokoro.style(baseline_voice), reference, sample_rate, sentences, language
        )
        return FitResult(
            style=style,
            start_voice=start_voice,
            similarity=best.similarity,
            trials=trials,
            accepted=accepted,
            seconds=time.monotonic() - started,
            reference_f0=reference_f0,
            baseline_voice=baseline_voice,
            language=language,
            check={
                "similarity": fitted_sim,
                "wer": fitted_wer,
                "baseline_similarity": baseline_sim,
                "baseline_wer": baseline_wer,
            },
            curve=curve,
        )

    def held_out(
        self,
        style: np.ndarray,
        reference: np.ndarray,
        sample_rate: int,
        sentences: tuple[str, ...] = HELD_OUT,
        language: str = "en-us",
    ) -> tuple[float, float]:
        """(similarity to the reference, error rate) on sentences the fit never used, spoken and heard
        in `language`."""
        target = self.encoder.embed(reference, sample_rate)
        sims, wers = [], []
        for text in sentences:
            audio = self.kokoro.speak(text, style, language=language)
            sims.append(similarity(self.encoder.embed(audio, 24000), target))
            wers.append(self._error_rate(text, audio, language))
        return float(np.mean(sims)), float(np.mean(wers))

    def _error_rate(self, text: str, audio: np.ndarray, language: str) -> float:
        """How far Whisper's transcript of Kokoro's `audio` (heard in `language`) is from `text`."""
        heard = self.transcriber.transcribe(audio, 24000, language).text
        return transcript_error_rate(text, heard, language)

    def grid(self) -> dict[str, np.ndarray]:
        """Embeddings of every grid blend speaking GRID_SENTENCE (shipped in assets/; computed if stale)."""
        if self._grid is None:
            names = blend_grid()
            stored = np.load(GRID_FILE) if GRID_FILE.exists() else None
            if stored is not None and list(stored["names"]) == names:
                self._grid = dict(zip(names, stored["embeddings"], strict=True))
            else:
                self._grid = self.build_grid()
        return self._grid

    def build_grid(self) -> dict[str, np.ndarray]:
        speak = self.kokoro.speak
        return {
            n: self.encoder.embed(speak(GRID_SENTENCE, self.kokoro.style(n)), 24000) for n in blend_grid()
        }


def fitter_on_node(
    kokoro: dict[str, Any], whisper_cache: Path, grid: dict[str, np.ndarray], modes: dict[str, FitMode]
) -> VoiceFitter:
    """The fitter a cluster node builds (`ClusterVoiceFitter`): its own Kokoro (built with `kokoro`,
    as the node's Kokoro host is), speaker encoder and Whisper, on all of the node's cores; `grid` is
    the studio's (assets/ does not travel with the code), `modes` the studio's fitter's."""
    threads = os.cpu_count() or 1
    engine = KokoroOnnxEngine(allocator=GpuAllocator([]), threads=threads, **kokoro)
    fitter = VoiceFitter(engine, SpeakerEncoder(), Transcriber(threads, whisper_cache), modes)
    fitter._grid = grid
    return fitter


class ClusterVoiceFitter:
    """Fits on a node of the Ray cluster that Kokoro speaks on, where one CPU and the custom resources
    `STUDIO_RAY_RESOURCES` gives "voice-fit" are free, with the node's own fitter (`fitter_on_node`):
    the same search and result, its progress passed back here; cancelling (a cancel raised by
    `progress`) kills it there, and a lost node runs the fit again on another."""

    def __init__(
        self,
        cluster: RayCluster,
        kokoro: ClusterEngine,
        whisper_cache: Path,
        grid: dict[str, np.ndarray],
        modes: dict[str, FitMode] = MODES,
    ) -> None:
        self.cluster = cluster
        self.build = (
            f"{__name__}:fitter_on_node",
            {"kokoro": kokoro.node_kwargs, "whisper_cache": whisper_cache, "grid": grid, "modes": modes},
        )

    def fit(
        self,
        reference: np.ndarray,
        sample_rate: int,
        mode: str = "quick",
        seed: int = 0,
        progress: ProgressCallback | None = None,
        language: str | None = None,
    ) -> FitResult:
        call = ("fit", (reference, sample_rate), {"mode": mode, "seed": seed, "language": language})
        result: FitResult = self.cluster.run("voice-fit", self.build, call, progress)
        return result


def median_f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median pitch of the voiced frames in Hz (0 when nothing is voiced)."""
    f0, _ = pyworld.dio(np.asarray(audio, np.float64), sample_rate, frame_period=10.0)
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else 0.0
