"""The one interface every engine implements, and the small types it speaks in.

An engine is one file with one `Engine` subclass. It declares what it is (`EngineInfo`: name,
capabilities, languages, license, what it needs), reports whether it can run here (`status()`,
cheap: never loads anything), and loads its model lazily, once, on first use (`ensure_loaded()`).
Speech comes out as a generator of `AudioChunk`s, one per sentence, so callers can stream, show
progress and time subtitles without waiting for the whole text.

Every engine speaks sentences through `Engine.synthesize` if it claims `Capability.TTS`; each other
capability is a small interface at the end of this file (`ScriptSpeaker`, `ClipCloner`,
`StepTrainer`, `VideoMaker`). An engine claims only what it implements (the registry checks), and
services ask the registry for an interface (`EngineRegistry.capable`), never for an engine by name.
"""

from __future__ import annotations

import contextvars
import importlib.util
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engines.environment import EngineEnvironment
from engines.gpu import GpuAllocator, Lease
from engines.text import base_language, detect_language, latin_language, quick_start_head, split_sentences

log = logging.getLogger("engines")


class Capability(StrEnum):
    TTS = "tts"
    DIALOGUE = "dialogue"
    CLONE = "clone"
    TRAIN = "train"
    VIDEO = "video"


class EngineState(StrEnum):
    READY = "ready"  # can load on first use
    LOADED = "loaded"  # in memory now
    NEEDS_WEIGHTS = "needs-weights"
    NEEDS_GPU = "needs-gpu"
    MISSING_PACKAGE = "missing-package"
    NEEDS_ENVIRONMENT = "needs-environment"  # its own pinned environment is not installed yet

    @property
    def usable(self) -> bool:
        """Whether an engine in this state can run here: in memory, or able to load on first use."""
        return self in (EngineState.READY, EngineState.LOADED)


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; the message says exactly what is missing."""


class UnknownVoice(ValueError):
    """The engine has no voice by that id."""


@dataclass(frozen=True)
class Requirement:
    """One thing an engine needs: a Python package (import name), a file/folder under weights/, or a GPU."""

    kind: str  # "package" | "weights" | "gpu"
    target: str  # import name, or a path relative to the weights folder
    hint: str = ""  # how to get it, shown to the user

    def describe(self, weights_dir: Path) -> str:
        if self.kind == "package":
            return f"Python package '{self.target}' is not installed ({self.hint or 'pip install it'})"
        if self.kind == "weights":
            return f"missing {weights_dir / self.target}" + (f" ({self.hint})" if self.hint else "")
        return f"needs a CUDA GPU ({self.hint or 'none is visible'})"


@dataclass(frozen=True)
class EngineInfo:
    name: str
    display_name: str
    capabilities: frozenset[Capability]
    languages: tuple[str, ...]
    license: str
    sample_rate: int
    description: str
    requirements: tuple[Requirement, ...] = ()
    memory_mb: int = 500  # rough resident size once loaded, for memory-pressure unloading
    # Its own pinned environment (engines/envs/<name>.txt) for its worker; None: the studio's.
    environment: str | None = None


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    missing: tuple[str, ...] = ()  # what it needs before it can run


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    engine: str
    language: str  # the voice's own language (the one it was made from)
    gender: str = ""
    description: str = ""
    languages: tuple[str, ...] = ()  # what it can speak; empty: its own language only


@dataclass(frozen=True)
class PhonemeSpan:
    """Where one phoneme (IPA) is spoken in a chunk's audio, in seconds from the chunk's start."""

    phoneme: str
    start: float
    end: float

    def shifted(self, seconds: float) -> PhonemeSpan:
        return PhonemeSpan(self.phoneme, self.start + seconds, self.end + seconds)


@dataclass(frozen=True)
class WordSpan:
    """Where one written word is spoken in a chunk's audio: the word as the text has it ("40-60°C")
    and as it is said ("forty to sixty degrees Celsius"), in seconds from the chunk's start."""

    written: str
    spoken: str
    start: float
    end: float

    def shifted(self, seconds: float) -> WordSpan:
        return WordSpan(self.written, self.spoken, self.start + seconds, self.end + seconds)


@dataclass
class AudioChunk:
    """One sentence of speech: mono float32 in [-1, 1] at `sample_rate`, and where the engine gives
    them (the embedded Kokoro and Piper do), its phonemes' times."""

    audio: np.ndarray
    sample_rate: int
    text: str
    index: int  # its place in the stream (0: the first chunk)
    phonemes: tuple[PhonemeSpan, ...] = ()
    continues: bool = False  # the rest of the previous chunk's sentence (split for a quick start)
    words: tuple[WordSpan, ...] = ()  # where the engine knows them (from its phoneme times)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class SynthesisOptions:
    speed: float = 1.0
    language: str | None = None  # a studio code ("zh", "ja", "en-us", "en-gb"); None: per sentence, detected
    extra: dict[str, object] = field(default_factory=dict)
    requester: str = ""  # who asks (an API key's owner, a UI session): turns go round robin by it
    quick_start: bool = False  # a long first sentence is spoken as two chunks, split at a clause
    # Pronunciation fixes: a word (lower case, as written) -> its phonemes (IPA, as the engine's G2P
    # writes them). Engines that take phonemes (Kokoro, Piper) use them in place of their G2P's.
    pronunciations: dict[str, str] = field(default_factory=dict)


# Set in threads that do background work (long tasks): they give way to interactive requests.
background_work: contextvars.ContextVar[bool] = contextvars.ContextVar("background_work", default=False)
# Set by a caller that wants to hear its place in an engine's queue while it waits (the UI's progress).
queue_listener: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar(
    "queue_listener", default=None
)


class _Ticket:
    __slots__ = ("granted", "requester")

    def __init__(self, requester: str) -> None:
        self.requester = requester
        self.granted = False


class RunQueue:
    """Who runs next on a loaded model: up to `capacity` synthesis calls at once, and a fair order
    for everyone waiting.

    Turns are one sentence long. Waiting callers are served round robin by requester (an API key,
    a UI session; see `SynthesisOptions.requester`), so a client sending many requests or a long
    text gets one turn per round, like everyone else, not a turn per request. A background caller
    (see `background_work`) waits while an interactive caller is waiting, so a short request waits
    for the sentence a long task is speaking, not its queue; under a steady stream of interactive
    requests every `FAIR_EVERY`-th turn goes to a waiting background caller, so long tasks still move.
    """

    FAIR_EVERY = 4
    REPORT_EVERY_S = 0.5

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(capacity, 1)
        self._changed = threading.Condition()
        self._active = 0
        # background? -> requester -> their waiting tickets; dict order is the round-robin order
        self._waiting: dict[bool, dict[str, deque[_Ticket]]] = {True: {}, False: {}}
        self._streak = 0  # interactive turns given since the last background turn

    def __enter__(self) -> RunQueue:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def turn(self, requester: str = "") -> Iterator[None]:
        """One sentence's turn on the model for `requester`."""
        self.acquire(requester)
        try:
            yield
        finally:
            self.release()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The model to oneself (unloading it): waits until no call runs, and blocks new ones."""
        with self._changed:
            while self._active:
                self._changed.wait()
            self._active = self.capacity
        try:
            yield
        finally:
            with self._changed:
                self._active = 0
                self._grant()

    def crowded(self) -> bool:
        """Whether others run or wait beside the caller's own turn (then a lean, one-thread run is
        worth more than a fast one)."""
        with self._changed:
            return self._active > 1 or any(self._waiting[True]) or any(self._waiting[False])

    def acquire(self, requester: str = "") -> None:
        background = background_work.get()
        listener = queue_listener.get()
        ticket = _Ticket(requester)
        with self._changed:
            if self._active < self.capacity and not self._anyone_waiting():
                self._active += 1
                self._streak = 0 if background else self._streak + 1
                return
            self._waiting[background].setdefault(requester, deque()).append(ticket)
        while True:
            with self._changed:
                if not ticket.granted:
                    self._changed.wait(self.REPORT_EVERY_S if listener else None)
                if ticket.granted:
                    return
                place = self._place(ticket, background)
            if listener:
                listener(place)

    def release(self) -> None:
        with self._changed:
            self._active -= 1
            self._grant()

    def _anyone_waiting(self) -> bool:
        return bool(self._waiting[True] or self._waiting[False])

    def _grant(self) -> None:
        """Hand free places to waiting tickets: the next requester in the round of the class due."""
        while self._active < self.capacity and self._anyone_waiting():
            background_due = bool(self._waiting[True]) and (
                not self._waiting[False] or self._streak >= self.FAIR_EVERY
            )
            self._streak = 0 if background_due else self._streak + 1
            line = self._waiting[background_due]
            requester = next(iter(line))
            tickets = line.pop(requester)
            tickets.popleft().granted = True
            if tickets:
                line[requester] = tickets  # to the end of the round
            self._active += 1
        self._changed.notify_all()

    def _place(self, ticket: _Ticket, background: bool) -> int:
        """How many turns come before `ticket` (the requesters ahead of it in its round)."""
        line = self._waiting[background]
        ahead = list(line).index(ticket.requester) if ticket.requester in line else 0
        return ahead + (sum(map(len, self._waiting[False].values())) if background else 0)


class Engine(ABC):
    """Base class: lazy, thread-safe loading and sentence streaming; subclasses do the model work."""

    info: EngineInfo
    # It speaks `SynthesisOptions.pronunciations` (IPA); the others get respellings in the text.
    takes_phonemes: bool = False

    def __init__(self, weights_dir: Path, allocator: GpuAllocator) -> None:
        self.weights_dir = weights_dir
        self.allocator = allocator
        self._load_lock = threading.Lock()
        self._runs = RunQueue(self.parallel_runs())  # who synthesizes next, and how many at once
        self._seconds_per_char: float | None = None  # measured synthesis time, a moving average
        self._warm = False  # has it spoken since loading?
        self._loaded = False
        self._lease: Lease | None = None
        self.last_used = 0.0
        self.listeners: list[Callable[[dict[str, object]], None]] = []  # load/unload events (metrics)

    # ---- state -------------------------------------------------------------------------------
    def requirements(self) -> tuple[Requirement, ...]:
        """What it needs here (an engine whose needs depend on the weights placed overrides this)."""
        return self.info.requirements

    def environment_name(self) -> str | None:
        """Its own environment's name (engines/envs/<name>.txt); None: it runs in the studio's. An
        engine whose environment depends on the weights placed overrides this."""
        return self.info.environment

    def environment(self) -> EngineEnvironment | None:
        """Its own pinned environment, where its package requirements are checked; None: the studio's."""
        name = self.environment_name()
        if name is None:
            return None
        imports = [req.target for req in self.requirements() if req.kind == "package"]
        return EngineEnvironment(name, imports=imports, engine=self.info.name)

    def status(self) -> EngineStatus:
        missing = []
        environment = self.environment()
        problem = environment.problem() if environment else None
        if problem:
            missing.append((EngineState.NEEDS_ENVIRONMENT, problem))
        for req in self.requirements():
            if req.kind == "package" and environment is not None:
                continue  # checked inside its environment when it is installed
            if req.kind == "package" and importlib.util.find_spec(req.target) is None:
                missing.append((EngineState.MISSING_PACKAGE, req.describe(self.weights_dir)))
            elif req.kind == "weights" and not (self.weights_dir / req.target).exists():
                missing.append((EngineState.NEEDS_WEIGHTS, req.describe(self.weights_dir)))
            elif req.kind == "gpu" and not self.allocator.gpu_available:
                missing.append((EngineState.NEEDS_GPU, req.describe(self.weights_dir)))
        if missing:
            return EngineStatus(missing[0][0], tuple(text for _, text in missing))
        return EngineStatus(EngineState.LOADED if self._loaded else EngineState.READY)

    def placed_problems(self) -> tuple[str, ...]:
        """What is wrong with optional files a user placed for it (a malformed voices file): shown in
        the Engines tab while the engine runs on without them. Asked for the engine reports only, not
        by `status()`, which every request asks."""
        return ()

    def parallel_runs(self) -> int:
        """How many synthesis calls may run at once on the loaded model (an engine whose model is
        safe to call from several threads, with cores to spare, says more than one)."""
        return 1

    def queue_seconds(self, characters: int) -> float | None:
        """About how long the model takes to speak `characters` of text queued on it, from its
        measured speed (None until it has spoken)."""
        if self._seconds_per_char is None:
            return None
        return characters * self._seconds_per_char / self._runs.capacity

    def cache_key(self, voice: str) -> str | None:
        """What, beside the request, decides the audio for `voice` (model and voice versions), for
        the speech cache; None: this engine's answers are not cached."""
        return None

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    @property
    def device(self) -> str:
        return self._lease.device if self._lease else "cpu"

    # ---- lifecycle -----------------------------------------------------------------------------
    def ensure_loaded(self) -> None:
        """Load once, on first use; concurrent callers wait for the one load."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            status = self.status()
            if not status.state.usable:
                raise EngineUnavailable(f"{self.info.name}: " + "; ".join(status.missing))
            needs_gpu = any(r.kind == "gpu" for r in self.requirements())
            started = time.monotonic()
            self._lease = self.allocator.acquire(
                f"engine:{self.info.name}",
                memory_mb=self.info.memory_mb if needs_gpu else 0,
                allow_cpu=not needs_gpu,
            )
            try:
                self._load()
            except Exception:
                self.allocator.release(self._lease)
                self._lease = None
                self._event("load-failed", time.monotonic() - started)
                raise
            self._loaded = True
            self._event("load", time.monotonic() - started)

    def unload(self) -> None:
        with self._load_lock, self._runs.exclusive():
            if not self._loaded:
                return
            started = time.monotonic()
            self._unload()
            self._loaded = False
            self._warm = False
            if self._lease:
                self.allocator.release(self._lease)
                self._lease = None
            self._event("unload", time.monotonic() - started)

    def _event(self, action: str, seconds: float) -> None:
        """Log one `engine` event and hand it to the listeners."""
        event = {"event": "engine", "engine": self.info.name, "action": action, "seconds": round(seconds, 3)}
        level = logging.WARNING if action == "load-failed" else logging.INFO
        log.log(level, "engine %s: %s in %.2f s", self.info.name, action, seconds, extra=event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("engine event listener failed")

    # ---- speech --------------------------------------------------------------------------------
    def voices(self) -> list[VoiceInfo]:
        return []

    def synthesize(
        self, text: str, voice: str, options: SynthesisOptions | None = None
    ) -> Iterator[AudioChunk]:
        """Speak `text` sentence by sentence; the first chunk comes before the whole text is done.
        Without `options.language` each sentence is spoken in the language its script says (Latin
        script: the voice's own language, `latin_language`)."""
        options = options or SynthesisOptions()
        self.check_voice(voice)
        self.ensure_loaded()
        latin = self.latin_language(voice)
        index = 0
        sentences = split_sentences(text)
        pieces = [(sentence, False) for sentence in sentences]
        if options.quick_start and sentences and (head := quick_start_head(sentences[0])):
            pieces[:1] = [(head, False), (sentences[0][len(head) :].strip(), True)]
        for sentence, continues in pieces:
            language = options.language or detect_language(sentence, text, latin)
            with self._runs.turn(options.requester):
                started = self.last_used = time.monotonic()
                audio, phonemes, words = self._synthesize_words(
                    sentence, voice, replace(options, language=language)
                )
                self._measured(len(sentence), time.monotonic() - started)
            if not len(audio):  # a sentence with nothing the engine could read
                continue
            yield AudioChunk(
                np.asarray(audio, dtype=np.float32),
                self.info.sample_rate,
                sentence,
                index,
                phonemes,
                continues and index > 0,
                words,
            )
            index += 1

    def _measured(self, characters: int, seconds: float) -> None:
        """Fold one call's speed into the moving average `queue_seconds` predicts with (not the
        first call after loading: it pays for lazy set-up, not for speech)."""
        if not self._warm:
            self._warm = True
            return
        per_char = seconds / max(characters, 1)
        last = self._seconds_per_char
        self._seconds_per_char = per_char if last is None else 0.8 * last + 0.2 * per_char

    def cancel(self) -> None:  # noqa: B027 (on purpose: most engines have nothing to stop)
        """Stop the call in flight where the engine can (a worker engine can); others finish it."""

    def check_voice(self, voice: str) -> None:
        """Raise UnknownVoice (with the valid ids) unless this engine can speak with `voice`."""
        ids = [v.id for v in self.voices()]
        if voice not in ids:
            raise UnknownVoice(f"engine '{self.info.name}' has no voice '{voice}'; voices: {', '.join(ids)}")

    def voice_languages(self, voice: str) -> tuple[str, ...]:
        """The languages `voice` can speak (studio codes); the engine's for voices it does not list."""
        for info in self.voices():
            if info.id == voice:
                return info.languages or (info.language,)
        return self.info.languages

    def latin_language(self, voice: str) -> str:
        """The language `voice` reads Latin-script text in when none is named: its own when that is
        written in Latin letters (an ef_ Kokoro voice: Spanish), else English."""
        own = next((info.language for info in self.voices() if info.id == voice), None)
        return latin_language(own)

    def speaks(self, voice: str, language: str) -> bool:
        """Whether `voice` can speak `language` (any English voice speaks en-us and en-gb)."""
        return any(base_language(own) == base_language(language) for own in self.voice_languages(voice))

    # ---- for subclasses ------------------------------------------------------------------------
    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _unload(self) -> None:
        """Drop every reference to the model so its memory can be freed."""

    def _synthesize_sentence(self, sentence: str, voice: str, options: SynthesisOptions) -> np.ndarray:
        raise EngineUnavailable(f"engine '{self.info.name}' does not synthesize speech")

    def _synthesize_timed(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...]]:
        """The sentence's audio and its phonemes' times; an engine that knows them overrides this."""
        return self._synthesize_sentence(sentence, voice, options), ()

    def _synthesize_words(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...], tuple[WordSpan, ...]]:
        """The sentence's audio, its phonemes' times and its words' times; an engine that knows
        the words (from its phonemes) overrides this."""
        return (*self._synthesize_timed(sentence, voice, options), ())


# ---- capability interfaces: what an engine claiming a capability can be asked ------------------
@runtime_checkable
class ScriptSpeaker(Protocol):
    """Capability.DIALOGUE: a whole multi-speaker script spoken in one pass (turn timing is the
    caller's to find)."""

    info: EngineInfo
    max_speakers: int

    def cancel(self) -> None:
        """Stop the call in flight, where the engine can."""
        ...

    def synthesize_dialogue(
        self,
        script_text: str,
        prompts: list[tuple[Path, str]] | None = None,
        options: SynthesisOptions | None = None,
    ) -> np.ndarray:
        """`script_text` tagged [S1]..[Sn]; `prompts[i]`: (reference clip, its transcript) for speaker
        i + 1. Float32 mono at `info.sample_rate`."""
        ...


@runtime_checkable
class ClipCloner(Protocol):
    """Capability.CLONE: text spoken in the voice of a reference clip, with no training."""

    info: EngineInfo

    def clone(
        self,
        text: str,
        voice_file: Path,
        voice_latent: Path | None = None,
        options: SynthesisOptions | None = None,
    ) -> np.ndarray:
        """Float32 mono at `info.sample_rate`."""
        ...


@runtime_checkable
class StepTrainer(Protocol):
    """Capability.TRAIN: the training wizard's steps as commands run in the engine's own code (and
    environment), each followed by `finish_step` (what the step's scripts leave to merge)."""

    info: EngineInfo

    @property
    def code_dir(self) -> Path: ...

    def step_command(
        self, step_name: str, ws: Any, params: dict[str, Any], lease: Lease | None = None
    ) -> list[str]:
        """The command (run in `code_dir`) that does `step_name` for the training workspace `ws`."""
        ...

    def finish_step(self, step_name: str, ws: Any) -> dict[str, Any]: ...

    def export_voice(self, ws: Any, voice_id: str, params: dict[str, Any], task_id: str) -> dict[str, Any]:
        """The trained weights as a voice the engine speaks (`voice_id`, `engine` in the result)."""
        ...


@runtime_checkable
class VideoMaker(Protocol):
    """Capability.VIDEO: a talking video from one image and each person's audio track."""

    info: EngineInfo

    def generate(
        self,
        request: Any,
        workdir: Path,
        lease: Lease,
        log: Callable[[str], None],
        cancelled: Callable[[], bool] = ...,
    ) -> Path:
        """Make the video on the lease's devices; the mp4's path."""
        ...


INTERFACES: dict[Capability, type] = {
    Capability.DIALOGUE: ScriptSpeaker,
    Capability.CLONE: ClipCloner,
    Capability.TRAIN: StepTrainer,
    Capability.VIDEO: VideoMaker,
}
CAPABILITY_WORDS = {  # what an engine with the capability does, for messages
    Capability.TTS: "speak sentences",
    Capability.DIALOGUE: "speak a whole dialogue script in one pass",
    Capability.CLONE: "clone a voice from a clip",
    Capability.TRAIN: "train voices",
    Capability.VIDEO: "make talking video",
}
