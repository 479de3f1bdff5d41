"""Speech service: text + voice id -> audio, for the UI, the REST routes and tasks alike.

It resolves a voice id to the engine that owns it (studio ids like `jf_alpha` or `joe`, blends,
OpenAI voice names), validates the request, streams sentence chunks from the engine with natural
gaps between them, and applies pitch. Long text can also run as a resumable "speech" task that
keeps each finished sentence on disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soundfile as sf
from pydantic import Field

from engines.base import AudioChunk, Capability, EngineUnavailable, SynthesisOptions, UnknownVoice
from engines.registry import EngineRegistry
from engines.text import LANGUAGE_NAMES, canonical_language, detect_language, foreign_script, split_sentences
from studio import audio as audio_io
from studio.errors import BadInput, NotFound, TooLarge, Unavailable
from studio.subtitles import Cue, to_srt
from studio.tasks.configs import LANGUAGE_HELP, LanguageName, TaskConfig
from studio.tasks.runner import TaskContext, TaskKind

DEFAULT_ENGINE = "kokoro"
DEFAULT_VOICE = "jf_alpha"
SENTENCE_GAP_S = 0.18

# OpenAI's voice names -> built-in voices, chosen to keep their gender and spread the timbres.
SHORT_TASK_CHARS = 1000  # about a minute of speech: tasks this small may run in the short-job lane
OPENAI_VOICES = {
    "alloy": "jf_alpha",
    "ash": "jm_kumo",
    "ballad": "jm_kumo*0.7+jf_gongitsune*0.3",
    "coral": "jf_nezumi",
    "echo": "jm_kumo",
    "fable": "jf_gongitsune",
    "onyx": "joe",
    "nova": "jf_nezumi",
    "sage": "jf_tebukuro",
    "shimmer": "jf_tebukuro",
    "verse": "jm_kumo*0.5+jf_alpha*0.5",
}
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
NOTHING_TO_SPEAK = (
    "text has nothing speakable: it needs letters or digits (emoji, symbols, punctuation "
    "and control characters alone are not read)"
)


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    voice: str = DEFAULT_VOICE
    engine: str | None = None
    speed: float = 1.0
    pitch: float = 1.0
    language: str | None = None  # any spelling canonical_language takes; None or "auto": per sentence


class SpeechConfig(TaskConfig):
    """A "speech" task: a text (long ones too) to one audio file with subtitles, sentence by sentence,
    resumable. Stored planned: `engine` and `voice` as the voice resolved to them."""

    text: str = Field(description="the words to speak")
    voice: str = Field(DEFAULT_VOICE, description="a voice id, a library voice, a blend or an OpenAI name")
    engine: str | None = Field(None, description="default: the engine that owns the voice")
    speed: float = Field(1.0, ge=0.25, le=4.0)
    pitch: float = Field(1.0, ge=0.5, le=2.0, description="pitch factor; 2.0 is an octave up")
    language: LanguageName | None = Field(None, description=LANGUAGE_HELP)
    format: Literal["wav", "flac", "mp3", "ogg", "opus", "aac", "pcm"] = "wav"

    def speech_request(self) -> SpeechRequest:
        return SpeechRequest(self.text, self.voice, self.engine, self.speed, self.pitch, self.language)


@dataclass
class Speech:
    audio: np.ndarray
    sample_rate: int
    cues: list[Cue]


class SpeechService:
    def __init__(
        self,
        registry: EngineRegistry,
        max_text_chars: int = 20_000,
        library_voices: Callable[[], list[str]] = list,
    ) -> None:
        self.registry = registry
        self.max_text_chars = max_text_chars
        self.library_voices = library_voices  # the voice library's ids (Kokoro speaks them), for messages

    def resolve(self, voice: str, engine: str | None = None) -> tuple[str, str]:
        """(engine name, engine voice id) for a studio voice id, a blend or an OpenAI voice name."""
        voice = OPENAI_VOICES.get(voice, voice)
        if engine in OPENAI_MODELS:
            engine = None
        if engine:
            try:
                candidate = self.registry.engine(engine)
            except KeyError as error:
                raise NotFound(str(error.args[0]), "unknown_engine") from None
            if Capability.TTS not in candidate.info.capabilities:
                speaking = ", ".join(e.info.name for e in self.registry.available(Capability.TTS))
                raise BadInput(
                    f"engine '{engine}' does not speak sentences on its own; engines that do: {speaking}",
                    "not_a_speech_engine",
                )
            try:
                candidate.check_voice(voice)
            except UnknownVoice as error:
                raise NotFound(str(error), "unknown_voice") from None
            return engine, voice
        # A zero-shot cloner speaking a library voice from its own clip comes before a fitted style.
        speaking = self.registry.available(Capability.TTS)
        speaking.sort(key=lambda engine: Capability.CLONE not in engine.info.capabilities)
        for candidate in speaking:
            try:
                candidate.check_voice(voice)
            except UnknownVoice:
                continue
            return candidate.info.name, voice
        known = [v.id for v in self.registry.voices()]
        library = self.library_voices()
        raise NotFound(
            f"unknown voice '{voice}'; voices: {', '.join(known)}"
            + (f", library voices: {', '.join(library)}" if library else "")
            + f", OpenAI names ({', '.join(OPENAI_VOICES)}) or a Kokoro blend like jf_alpha*0.7+jm_kumo*0.3",
            "unknown_voice",
        )

    def validate(self, request: SpeechRequest) -> None:
        if not request.text or not request.text.strip():
            raise BadInput("text is empty: give the words to speak", "empty_text")
        if len(request.text) <= self.max_text_chars and not split_sentences(request.text):
            raise BadInput(NOTHING_TO_SPEAK, "nothing_to_speak")
        if len(request.text) > self.max_text_chars:
            raise TooLarge(
                f"text is {len(request.text)} characters; the limit is {self.max_text_chars} per request "
                "(split it, or run it as a speech task)",
                "text_too_long",
            )
        if not 0.25 <= request.speed <= 4.0:
            raise BadInput(f"speed {request.speed} is out of range 0.25..4.0", "bad_speed")
        if not 0.5 <= request.pitch <= 2.0:
            raise BadInput(f"pitch {request.pitch} is out of range 0.5..2.0", "bad_pitch")
        self.language(request.language)

    @staticmethod
    def language(value: str | None) -> str | None:
        """The studio code for a requested language ("zh", "ja", "en-us", "en-gb"), None for auto."""
        try:
            return canonical_language(value)
        except ValueError as error:
            raise BadInput(str(error), "bad_language") from None

    def languages_needed(self, text: str, language: str | None) -> list[str]:
        """The languages `text` will be spoken in: the one asked for, or each sentence's own (422 for
        a sentence written only in a script none of them uses: it would be read out letter by letter)."""
        if language := self.language(language):
            return [language]
        sentences = split_sentences(text)
        for sentence in sentences:
            if script := foreign_script(sentence):
                raise BadInput(
                    f"'{sentence[:40]}' is written in {script} script; the studio speaks Mandarin, Japanese "
                    "and English (name a language to have it read anyway)",
                    "unsupported_language",
                )
        return sorted({detect_language(sentence, context=text) for sentence in sentences})

    def check_languages(self, engine_name: str, voice: str, languages: list[str]) -> None:
        """422 naming the language and the voices that speak it, when `voice` cannot speak one."""
        engine = self.registry.engine(engine_name)
        for language in languages:
            if engine.speaks(voice, language):
                continue
            able = [
                v.id for v in self.registry.voices() if self.registry.engine(v.engine).speaks(v.id, language)
            ]
            raise BadInput(
                f"voice '{voice}' cannot speak {LANGUAGE_NAMES[language]} ({language}); voices that can: "
                f"{', '.join(able) or 'none here'}",
                "unsupported_language",
            )

    def stream(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        """Sentence chunks as they are made; every chunk after the first starts with a short gap."""
        self.validate(request)
        engine_name, voice = self.resolve(request.voice, request.engine)
        language = self.language(request.language)
        self.check_languages(engine_name, voice, self.languages_needed(request.text, language))
        try:
            engine = self.registry.loaded(engine_name)
            options = SynthesisOptions(speed=request.speed, language=language)
            chunks = engine.synthesize(request.text, voice, options)
            spoken = False
            for chunk in chunks:
                spoken = True
                audio = audio_io.change_pitch(chunk.audio, chunk.sample_rate, request.pitch)  # same length
                gap = int(SENTENCE_GAP_S * chunk.sample_rate) if chunk.index > 0 else 0
                audio = np.concatenate([np.zeros(gap, np.float32), audio])
                phonemes = tuple(span.shifted(gap / chunk.sample_rate) for span in chunk.phonemes)
                yield AudioChunk(audio, chunk.sample_rate, chunk.text, chunk.index, phonemes)
            if not spoken:  # every sentence was something the engine could not read (e.g. ١٢٣)
                raise BadInput(NOTHING_TO_SPEAK, "nothing_to_speak")
        except EngineUnavailable as error:
            raise Unavailable(str(error)) from None

    def synthesize(self, request: SpeechRequest) -> Speech:
        """The whole text as one array, with a cue per sentence."""
        pieces: list[np.ndarray] = []
        cues: list[Cue] = []
        rate, position = 0, 0.0
        for chunk in self.stream(request):
            rate = chunk.sample_rate
            gap = SENTENCE_GAP_S if chunk.index > 0 else 0.0
            cues.append(Cue(position + gap, position + chunk.duration, chunk.text))
            position += chunk.duration
            pieces.append(chunk.audio)
        return Speech(np.concatenate(pieces) if pieces else np.zeros(0, np.float32), rate, cues)

    # ---- the "speech" task: long text to a file, resumable ------------------------------------
    def task_kind(self) -> TaskKind:
        return TaskKind(
            "speech",
            self._run_task,
            config=SpeechConfig,
            resumable=True,
            prepare=self.prepare_task,
            is_short=lambda config: len(config.text) <= SHORT_TASK_CHARS,
        )

    def prepare_task(self, config: SpeechConfig) -> SpeechConfig:
        """A speech task's config checked (text, voice, languages) and planned: the engine and the
        engine's voice id it resolved to."""
        request = config.speech_request()
        self.validate(request)
        engine_name, voice = self.resolve(request.voice, request.engine)
        self.check_languages(engine_name, voice, self.languages_needed(request.text, request.language))
        return config.model_copy(update={"engine": engine_name, "voice": voice})

    def _run_task(self, context: TaskContext) -> dict[str, Any]:
        config: SpeechConfig = self.prepare_task(context.request)  # again: the voice may be gone
        request, fmt = config.speech_request(), config.format
        engine_name, voice = str(config.engine), config.voice
        language = self.language(request.language)
        engine = self.registry.loaded(engine_name)
        sentences = split_sentences(request.text)
        parts = context.folder / "_parts"
        parts.mkdir(exist_ok=True)
        done = sum(1 for i in range(len(sentences)) if (parts / f"{i:05d}.wav").exists())
        if done:
            context.log(f"resuming: {done} of {len(sentences)} sentences already made")
        for i, sentence in enumerate(sentences):
            part = parts / f"{i:05d}.wav"
            if part.exists():
                continue
            context.progress(100.0 * i / len(sentences), f"sentence {i + 1}/{len(sentences)}")
            spoken_in = language or detect_language(sentence, context=request.text)
            options = SynthesisOptions(speed=request.speed, language=spoken_in)
            chunk = next(iter(engine.synthesize(sentence, voice, options)), None)  # None: nothing to read
            audio = (
                audio_io.change_pitch(chunk.audio, chunk.sample_rate, request.pitch) if chunk else np.zeros(0)
            )
            tmp = part.with_suffix(".tmp.wav")
            sf.write(tmp, audio, engine.info.sample_rate, subtype="FLOAT")
            tmp.replace(part)  # a part exists only once it is whole
        context.progress(99.0, "joining")
        pieces, cues, position = [], [], 0.0
        rate = engine.info.sample_rate
        gap = np.zeros(int(SENTENCE_GAP_S * rate), np.float32)
        for i, sentence in enumerate(sentences):
            audio, rate = sf.read(parts / f"{i:05d}.wav", dtype="float32")
            if not len(audio):
                continue
            if pieces:
                pieces.append(gap)
                position += SENTENCE_GAP_S
            cues.append(Cue(position, position + len(audio) / rate, sentence))
            position += len(audio) / rate
            pieces.append(audio)
        (context.folder / f"speech.{fmt}").write_bytes(audio_io.encode(np.concatenate(pieces), rate, fmt))
        (context.folder / "speech.srt").write_text(to_srt(cues), encoding="utf-8")
        (context.folder / "timing.json").write_text(
            json.dumps([{"start": c.start, "end": c.end, "text": c.text} for c in cues], indent=1),
            encoding="utf-8",
        )
        return {"duration": position, "sentences": len(sentences), "engine": engine_name, "voice": voice}
