"""Speech service: text + voice id -> audio, for the UI, the REST routes and tasks alike.

It resolves a voice id to the engine that owns it (studio ids like `jf_alpha` or `joe`, blends,
OpenAI voice names), validates the request, admits it (or answers busy) on the engine's bounded
queue, streams sentence chunks from the engine with natural gaps between them, and applies pitch.
Finished files come from and go to the speech cache. Long text can also run as a resumable
"speech" task that keeps each finished sentence on disk.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soundfile as sf
from pydantic import Field

from engines.base import (
    AudioChunk,
    Capability,
    EngineUnavailable,
    SynthesisOptions,
    UnknownVoice,
    background_work,
)
from engines.registry import EngineRegistry
from engines.text import LANGUAGE_NAMES, canonical_language, detect_language, foreign_script, split_sentences
from studio import audio as audio_io
from studio.errors import BadInput, NotFound, StudioError, TooLarge, Unavailable
from studio.services.admission import Admission
from studio.services.asr import Transcriber
from studio.services.captions import Captioned, placed
from studio.services.pronunciation import (
    Lexicon,
    Pronouncing,
    Segment,
    has_markup,
    respelled,
    speech_segments,
)
from studio.services.quality import QualityGate, SentenceCheck, retake_options, summary
from studio.services.speech_cache import CachedSpeech, SpeechCache
from studio.subtitles import Cue, to_srt
from studio.tasks.configs import LANGUAGE_HELP, LanguageName, TaskConfig
from studio.tasks.runner import TaskContext, TaskKind

DEFAULT_ENGINE = "kokoro"
DEFAULT_VOICE = "jf_alpha"
SENTENCE_GAP_S = 0.18
CLAUSE_GAP_S = 0.08  # inside a sentence split for a quick start: a comma's pause

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
MODELS_CREATED = 1_700_000_000  # `created` of the listed models (OpenAI's list has one; ours do not change)
# `narration_voice|quote_voice`: "quoted speech" in the second voice, the rest (*narration*) in the first.
VOICE_PAIR = "|"
QUOTED = re.compile(r'"[^"]*(?:"|$)|“[^”]*(?:”|$)|«[^»]*(?:»|$)|「[^」]*(?:」|$)|『[^』]*(?:』|$)')
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
    requester: str = ""  # who asks (an API key's owner, a UI session): the engine serves them in turn
    quick_start: bool = False  # a long first sentence goes out as two chunks (streams: sooner first audio)
    # Word (lower case) -> IPA for the engine, once the text was read for markup and the lexicon
    # (`SpeechService._pronounced`); None: not read yet.
    pronunciations: Mapping[str, str] | None = None


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
    quality_check: bool = Field(
        False, description="hear every sentence back (ASR) and make a bad one again; report in quality.json"
    )

    def speech_request(self) -> SpeechRequest:
        return SpeechRequest(self.text, self.voice, self.engine, self.speed, self.pitch, self.language)


@dataclass
class Speech:
    audio: np.ndarray
    sample_rate: int
    cues: list[Cue]


class SpeechService:
    transcriber: Transcriber  # the bundled ASR, set by the Studio: the quality gate of tasks hears with it
    lexicon: Lexicon | None = None  # the pronunciation lexicon, set by the Studio

    def __init__(
        self,
        registry: EngineRegistry,
        max_text_chars: int = 20_000,
        library_voices: Callable[[], list[str]] = list,
        admission: Admission | None = None,
        cache: SpeechCache | None = None,
        usable_library_voices: Callable[[], list[dict[str, str]]] = list,
    ) -> None:
        self.registry = registry
        self.max_text_chars = max_text_chars
        self.library_voices = library_voices  # the voice library's ids (Kokoro speaks them), for messages
        self.usable_library_voices = usable_library_voices  # fitted ones: id, name, engine, language
        self.admission = admission or Admission(0)
        self.cache = cache

    # ---- what OpenAI-compatible clients list ----------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """OpenAI's model entries for every `model` the speech route takes: OpenAI's TTS names (the
        default engine) and each speech engine that can run here."""
        names = [*OPENAI_MODELS, *(e.info.name for e in self.registry.available(Capability.TTS))]
        return [
            {"id": name, "object": "model", "created": MODELS_CREATED, "owned_by": "speech-studio"}
            for name in names
        ]

    def voice_list(self) -> list[dict[str, str]]:
        """Every `voice` the speech route takes by name, with the fields Open WebUI reads (`id`,
        `name`): built-in voices of engines that can run here, fitted library voices, OpenAI's names
        (each says the voice it stands for)."""
        voices = [
            {"id": v.id, "name": v.name, "engine": v.engine, "language": v.language, "type": "builtin"}
            for v in self.registry.voices()
        ]
        voices += [voice | {"type": "library"} for voice in self.usable_library_voices()]
        for name, target in OPENAI_VOICES.items():
            try:
                engine, _ = self.resolve(target)
            except NotFound:  # its engine cannot run here
                continue
            voices.append(
                {"id": name, "name": f"{name} ({target})", "engine": engine, "language": "", "type": "openai"}
            )
        return voices

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
            if not (status := candidate.status()).state.usable:  # 503 saying what it needs, not "no voice"
                raise Unavailable(
                    f"engine '{engine}' cannot run here ({status.state.value}): {'; '.join(status.missing)}"
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

    def languages_needed(self, text: str, language: str | None, latin: str = "en-us") -> list[str]:
        """The languages `text` will be spoken in: the one asked for, or each sentence's own, a
        Latin-script one in `latin` (422 for a sentence written only in a script none of them uses:
        it would be read out letter by letter)."""
        if language := self.language(language):
            return [language]
        sentences = split_sentences(text)
        for sentence in sentences:
            if script := foreign_script(sentence):
                raise BadInput(
                    f"'{sentence[:40]}' is written in {script} script; the studio reads Chinese, Japanese, "
                    "Hindi and Latin-script text (name a language to have it read anyway)",
                    "unsupported_language",
                )
        return sorted({detect_language(sentence, context=text, latin=latin) for sentence in sentences})

    def latin_language(self, voice: str, engine: str | None = None) -> str:
        """What `voice` reads Latin-script text in when no language is named (`Engine.latin_language`)."""
        engine_name, resolved = self.resolve(voice, engine)
        return self.registry.engine(engine_name).latin_language(resolved)

    def check_languages(self, engine_name: str, voice: str, text: str, language: str | None) -> None:
        """422 naming the language and the voices that speak it, when `voice` cannot speak one that
        `text` needs (in `language`, or auto: a Latin-script sentence in the voice's own language)."""
        engine = self.registry.engine(engine_name)
        for needed in self.languages_needed(text, language, engine.latin_language(voice)):
            if engine.speaks(voice, needed):
                continue
            able = [
                v.id for v in self.registry.voices() if self.registry.engine(v.engine).speaks(v.id, needed)
            ]
            raise BadInput(
                f"voice '{voice}' cannot speak {LANGUAGE_NAMES.get(needed, needed)} ({needed}); voices that "
                f"can: {', '.join(able) or 'none here'}",
                "unsupported_language",
            )

    def stream(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        """Sentence chunks as they are made; every chunk after the first starts with a short gap
        (shorter inside a sentence split for a quick start), and fades in and out at its edges.
        An interactive request is admitted on the engine's bounded queue first (`Busy` otherwise);
        background tasks are not refused, they give way instead. A `narration|quote` voice pair
        speaks each part in its voice (`_narrated`). Markup, SSML and the lexicon are read first
        (`_pronounced`)."""
        if request.pronunciations is None:
            yield from self._pronounced(request)
            return
        if VOICE_PAIR in request.voice:
            yield from self._narrated(request)
            return
        self.validate(request)
        engine_name, voice = self.resolve(request.voice, request.engine)
        language = self.language(request.language)
        self.check_languages(engine_name, voice, request.text, language)
        try:
            engine = self.registry.loaded(engine_name)
            admission = (
                nullcontext(lambda count: None)
                if background_work.get()
                else self.admission.admitted(engine, len(request.text))
            )
            with admission as spoken_chars:
                options = SynthesisOptions(
                    speed=request.speed,
                    language=language,
                    requester=request.requester,
                    quick_start=request.quick_start,
                    pronunciations=dict(request.pronunciations),
                )
                spoken = False
                for chunk in engine.synthesize(request.text, voice, options):
                    spoken = True
                    spoken_chars(len(chunk.text))
                    audio = audio_io.change_pitch(
                        chunk.audio, chunk.sample_rate, request.pitch
                    )  # same length
                    audio = audio_io.fade_edges(audio, chunk.sample_rate)
                    pause = (CLAUSE_GAP_S if chunk.continues else SENTENCE_GAP_S) if chunk.index > 0 else 0.0
                    gap = int(pause * chunk.sample_rate)
                    audio = np.concatenate([np.zeros(gap, np.float32), audio])
                    phonemes = tuple(span.shifted(gap / chunk.sample_rate) for span in chunk.phonemes)
                    yield AudioChunk(
                        audio,
                        chunk.sample_rate,
                        chunk.text,
                        chunk.index,
                        phonemes,
                        chunk.continues,
                        tuple(word.shifted(gap / chunk.sample_rate) for word in chunk.words),
                    )
                if not spoken:  # every sentence was something the engine could not read (e.g. ١٢٣)
                    raise BadInput(NOTHING_TO_SPEAK, "nothing_to_speak")
        except EngineUnavailable as error:
            raise Unavailable(str(error)) from None

    def _narrated(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        """SillyTavern's narrator and character in one request: quoted speech in the second voice of
        `narration|quote`, the rest in the first, in order, at the first part's sample rate. Every
        part is checked (voice, languages) before any audio is made."""
        self.validate(request)
        narrator, _, quoter = (part.strip() for part in request.voice.partition(VOICE_PAIR))
        parts = [
            dataclasses.replace(request, text=text, voice=quoter if quoted else narrator)
            for text, quoted in narration_parts(request.text)
            if split_sentences(text)
        ]
        if not parts:
            raise BadInput(NOTHING_TO_SPEAK, "nothing_to_speak")
        for voice in (narrator, quoter):
            self.resolve(voice, request.engine)
        for part in parts:
            engine_name, voice = self.resolve(part.voice, part.engine)
            self.check_languages(engine_name, voice, part.text, part.language)
        rate, index = 0, 0
        for part in parts:
            for chunk in self.stream(part):
                rate = rate or chunk.sample_rate
                audio = audio_io.resample(chunk.audio, chunk.sample_rate, rate)
                pause = int(SENTENCE_GAP_S * rate) if chunk.index == 0 and index > 0 else 0  # a new part
                audio = np.concatenate([np.zeros(pause, np.float32), audio])
                words = tuple(word.shifted(pause / rate) for word in chunk.words)
                yield AudioChunk(audio, rate, chunk.text, index, (), chunk.continues, words)
                index += 1

    def _pronounced(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        """The text read for pronunciation (`services/pronunciation.py`): inline marks and SSML into
        segments, then the lexicon's entries for each segment's languages. An engine that takes
        phonemes (`Engine.takes_phonemes`) gets the entries' and the marks' phonemes, and respellings
        only for words without phonemes; any other engine gets respellings in the text."""
        self.validate(request)
        segments = speech_segments(request.text) if has_markup(request.text) else [Segment(request.text)]
        takes_phonemes = all(
            self.registry.engine(self.resolve(voice.strip(), request.engine)[0]).takes_phonemes
            for voice in request.voice.split(VOICE_PAIR)
        )
        parts: list[tuple[SpeechRequest, float]] = []
        for segment in segments:
            languages = self.languages_needed(segment.text, request.language) if segment.text else []
            text, phonemes = self.lexicon_applied(
                segment.text, languages, takes_phonemes, segment.pronunciations
            )
            speed = min(max(request.speed * segment.speed, 0.25), 4.0)
            part = dataclasses.replace(request, text=text, speed=speed, pronunciations=phonemes)
            parts.append((part, segment.pause_after))
        if (
            len(segments) == 1
            and segments[0].speed == 1.0
            and segments[0].text
            and not segments[0].pause_after
        ):
            # no pause, one speed
            yield from self.stream(parts[0][0])
            return
        yield from self._segmented(request, parts)

    def lexicon_applied(
        self,
        text: str,
        languages: list[str],
        takes_phonemes: bool,
        marked: dict[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """`text` with the lexicon's respellings, and the phonemes (the lexicon's, then `marked`
        inline ones) for an engine that takes them; also for paths that call an engine directly
        (speech tasks, audiobooks). A word with phonemes keeps its spelling."""
        marked = marked or {}
        entries = self.lexicon.for_languages(languages) if self.lexicon else Pronouncing({}, {})
        phonemes = {**entries.phonemes, **marked} if takes_phonemes else {}
        respellings = {word: said for word, said in entries.respellings.items() if word not in phonemes}
        return respelled(text, respellings, keep=marked), phonemes

    def _segmented(
        self, request: SpeechRequest, parts: list[tuple[SpeechRequest, float]]
    ) -> Iterator[AudioChunk]:
        """Parts spoken in order, each through `stream` (admission, engine, gaps), a part's pause as
        silence before the next one's speech (a clause's gap where it has none), at the first part's
        sample rate. Every part is checked (voice, languages) before any audio is made."""
        speaking = [part for part, _ in parts if split_sentences(part.text)]
        if not speaking:
            raise BadInput(NOTHING_TO_SPEAK, "nothing_to_speak")
        if VOICE_PAIR not in request.voice:  # a pair's parts are checked by `_narrated`
            for part in speaking:
                self.validate(part)
                engine_name, voice = self.resolve(part.voice, part.engine)
                self.check_languages(engine_name, voice, part.text, part.language)
        last = max(i for i, (part, _) in enumerate(parts) if split_sentences(part.text))
        trailing = sum(pause for _, pause in parts[last:])  # after the last words: the last chunk's end
        held: AudioChunk | None = None  # with a trailing pause, each chunk waits for the next
        rate, index, silence = 0, 0, 0.0
        for part, pause in parts:
            for chunk in self.stream(part) if split_sentences(part.text) else ():
                rate = rate or chunk.sample_rate
                lead = 0.0
                if chunk.index == 0:  # a new part: its pause (or a clause's gap) before it
                    lead, silence = silence or (CLAUSE_GAP_S if index else 0.0), 0.0
                audio = audio_io.resample(chunk.audio, chunk.sample_rate, rate)
                placed = dataclasses.replace(
                    chunk,
                    audio=np.concatenate([np.zeros(int(lead * rate), np.float32), audio]),
                    sample_rate=rate,
                    index=index,
                    phonemes=tuple(span.shifted(lead) for span in chunk.phonemes),
                    words=tuple(span.shifted(lead) for span in chunk.words),
                )
                index += 1
                if not trailing:
                    yield placed
                    continue
                if held is not None:
                    yield held
                held = placed
            silence += pause
        if held is not None:
            yield dataclasses.replace(
                held, audio=np.concatenate([held.audio, np.zeros(int(trailing * rate), np.float32)])
            )

    def synthesize(self, request: SpeechRequest) -> Speech:
        """The whole text as one array, with a cue per sentence."""
        pieces: list[np.ndarray] = []
        cues: list[Cue] = []
        rate, position = 0, 0.0
        for chunk in self.stream(request):
            rate = chunk.sample_rate
            gap = (CLAUSE_GAP_S if chunk.continues else SENTENCE_GAP_S) if chunk.index > 0 else 0.0
            cues.append(Cue(position + gap, position + chunk.duration, chunk.text))
            position += chunk.duration
            pieces.append(chunk.audio)
        return Speech(np.concatenate(pieces) if pieces else np.zeros(0, np.float32), rate, cues)

    def captioned(self, request: SpeechRequest, fmt: str) -> tuple[Captioned, str]:
        """The whole text as one file in `fmt` with each word's times (from engines that know them:
        the embedded Kokoro and Piper) and phrase-level cues (`captions.py`), and whether it came from
        the cache (as `encoded`)."""
        key = self._cache_key(request, fmt, "captioned")
        if key and (hit := self.cache.get(key)) and hit.timing:  # type: ignore[union-attr]
            return Captioned.from_cached(hit, fmt), "hit"
        chunks, words, cues = placed(self.stream(request))
        rate = chunks[0].sample_rate  # the stream yields at least one chunk or raises
        audio = np.concatenate([chunk.audio for chunk in chunks])
        made = Captioned(
            audio_io.encode(audio, rate, fmt), fmt, rate, len(audio) / rate, tuple(words), tuple(cues)
        )
        if key:
            self.cache.put(key, made.to_cached())  # type: ignore[union-attr]
        return made, "miss" if key else "off"

    # ---- encoded for the HTTP routes, through the cache ------------------------------------------
    def encoded(self, request: SpeechRequest, fmt: str) -> tuple[CachedSpeech, str]:
        """The whole text as one file in `fmt`, and whether it came from the cache ("hit", "miss",
        or "off" where it cannot: no cache, or an engine whose answers are not cached)."""
        key = self._cache_key(request, fmt, "file")
        if key and (hit := self.cache.get(key)):  # type: ignore[union-attr]
            return hit, "hit"
        speech = self.synthesize(request)
        made = CachedSpeech(
            audio_io.encode(speech.audio, speech.sample_rate, fmt),
            len(speech.audio) / speech.sample_rate,
            speech.sample_rate,
        )
        if key:
            self.cache.put(key, made)  # type: ignore[union-attr]
        return made, "miss" if key else "off"

    def encoded_stream(self, request: SpeechRequest, fmt: str) -> tuple[Iterator[bytes], str]:
        """The text as `fmt` bytes sent while it is made (wav, pcm and mp3 sentence by sentence;
        other formats once whole), and the cache status as `encoded` says it. Errors (unknown voice,
        engine missing, busy, nothing to speak) are raised here, before any byte is sent."""
        key = self._cache_key(request, fmt, "stream")
        if key and (hit := self.cache.get(key)):  # type: ignore[union-attr]
            return iter([hit.data]), "hit"
        chunks = self.stream(request)
        first = next(chunks)  # the stream yields at least one chunk or raises
        made = read_ahead(itertools.chain([first], chunks))
        if not key:
            return encode_stream(made, first.sample_rate, fmt), "off"
        return self._kept(made, key, first.sample_rate, fmt), "miss"

    def encoded_events(self, request: SpeechRequest, fmt: str) -> tuple[Iterator[bytes], str]:
        """`encoded_stream` as OpenAI's server-sent events (`stream_format: "sse"`): a
        `speech.audio.delta` with base64 `audio` per part as it is made, then `speech.audio.done`
        with `usage` (no tokenizer here: tokens are characters of the input). Errors before the
        first byte are raised here; a failure after it is an `error` event."""
        parts, cache = self.encoded_stream(request, fmt)
        return sse_events(parts, fmt, len(request.text)), cache

    def _kept(self, chunks: Iterator[AudioChunk], key: str, rate: int, fmt: str) -> Iterator[bytes]:
        """The encoded stream, put in the cache once it has been sent whole (not when cut short)."""
        samples = 0

        def counted() -> Iterator[AudioChunk]:
            nonlocal samples
            for chunk in chunks:
                samples += len(chunk.audio)
                yield chunk

        sent = []
        for part in encode_stream(counted(), rate, fmt):
            sent.append(part)
            yield part
        self.cache.put(key, CachedSpeech(b"".join(sent), samples / rate, rate))  # type: ignore[union-attr]

    def _cache_key(self, request: SpeechRequest, fmt: str, kind: str) -> str | None:
        """The request's cache key, or None where its answer is not cached."""
        if self.cache is None or not self.cache.enabled or VOICE_PAIR in request.voice:
            return None
        self.validate(request)
        engine_name, voice = self.resolve(request.voice, request.engine)
        version = self.registry.engine(engine_name).cache_key(voice)
        if version is None:
            return None
        return SpeechCache.key(
            kind=kind,
            format=fmt,
            text=request.text,
            engine=engine_name,
            voice=voice,
            version=version,
            speed=request.speed,
            pitch=request.pitch,
            language=self.language(request.language),
            quick_start=request.quick_start,
            lexicon=self.lexicon.revision() if self.lexicon else "",
        )

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
        self.check_languages(engine_name, voice, request.text, request.language)
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
        gate = QualityGate(self.transcriber) if config.quality_check else None
        latin = engine.latin_language(voice)
        for i, sentence in enumerate(sentences):
            part = parts / f"{i:05d}.wav"
            if part.exists():
                continue
            context.progress(100.0 * i / len(sentences), f"sentence {i + 1}/{len(sentences)}")
            spoken_in = language or detect_language(sentence, request.text, latin)
            said, phonemes = self.lexicon_applied(sentence, [spoken_in], engine.takes_phonemes)
            options = SynthesisOptions(speed=request.speed, language=spoken_in, pronunciations=phonemes)

            def make(attempt: int, text: str = said, base: SynthesisOptions = options) -> tuple[Any, int]:
                chunk = next(iter(engine.synthesize(text, voice, retake_options(base, attempt))), None)
                if chunk is None:  # nothing to read
                    return np.zeros(0), engine.info.sample_rate
                return audio_io.change_pitch(chunk.audio, chunk.sample_rate, request.pitch), chunk.sample_rate

            if gate:
                audio, _, check = gate.take(i, sentence, spoken_in, make)
                # Written before its part: a finished part always has its check, and a resumed task
                # does not hear it again.
                (parts / f"{i:05d}.json").write_text(json.dumps(check.as_dict(), ensure_ascii=False), "utf-8")
                if not check.passed:
                    context.log(f"sentence {i + 1} heard wrong in all {check.takes} takes: {check.heard!r}")
            else:
                audio, _ = make(0)
            tmp = part.with_suffix(".tmp.wav")
            sf.write(tmp, audio, engine.info.sample_rate, subtype="FLOAT")
            tmp.replace(part)  # a part exists only once it is whole
        context.progress(99.0, "joining")
        pieces, cues, position = [], [], 0.0
        rate = engine.info.sample_rate
        gap = np.zeros(int(SENTENCE_GAP_S * rate), np.float32)
        checks: list[SentenceCheck] = []
        for i, sentence in enumerate(sentences):
            audio, rate = sf.read(parts / f"{i:05d}.wav", dtype="float32")
            if gate:
                checks.append(SentenceCheck(**json.loads((parts / f"{i:05d}.json").read_text("utf-8"))))
            if not len(audio):
                continue
            if pieces:
                pieces.append(gap)
                position += SENTENCE_GAP_S
            if checks:
                checks[-1].start = round(position, 3)
            cues.append(Cue(position, position + len(audio) / rate, sentence))
            position += len(audio) / rate
            pieces.append(audio)
        (context.folder / f"speech.{fmt}").write_bytes(audio_io.encode(np.concatenate(pieces), rate, fmt))
        (context.folder / "speech.srt").write_text(to_srt(cues), encoding="utf-8")
        (context.folder / "timing.json").write_text(
            json.dumps([{"start": c.start, "end": c.end, "text": c.text} for c in cues], indent=1),
            encoding="utf-8",
        )
        result: dict[str, Any] = {
            "duration": position,
            "sentences": len(sentences),
            "engine": engine_name,
            "voice": voice,
        }
        if gate:
            result["quality"] = summary(checks, gate.threshold)
            report = json.dumps(result["quality"] | {"sentences": [c.as_dict() for c in checks]}, indent=1)
            (context.folder / "quality.json").write_text(report, encoding="utf-8")
        return result


def read_ahead(chunks: Iterator[AudioChunk], depth: int = 2) -> Iterator[AudioChunk]:
    """Keep synthesizing in a thread while earlier chunks are sent, instead of one sentence per pull;
    stops when the consumer goes away (closing this generator)."""
    buffer: queue.Queue[AudioChunk | BaseException | None] = queue.Queue(depth)
    stopped = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stopped.is_set():
                    try:
                        buffer.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stopped.is_set():
                    return
            buffer.put(None)
        except BaseException as error:  # surfaced to the consumer
            buffer.put(error)

    threading.Thread(target=produce, name="speech-ahead", daemon=True).start()
    try:
        while (item := buffer.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()


def encode_stream(chunks: Iterator[AudioChunk], sample_rate: int, fmt: str) -> Iterator[bytes]:
    """Chunks as `fmt` bytes: wav (a streaming header, then PCM), pcm and mp3 (frames concatenate)
    as each chunk comes; other containers need the whole signal, so they come once at the end."""
    if fmt == "wav":
        yield audio_io.wav_stream_header(sample_rate)
        fmt = "pcm"
    if fmt == "pcm":
        yield from (audio_io.pcm16(chunk.audio) for chunk in chunks)
    elif fmt == "mp3":
        yield from (audio_io.encode(chunk.audio, sample_rate, "mp3") for chunk in chunks)
    else:
        yield audio_io.encode(np.concatenate([chunk.audio for chunk in chunks]), sample_rate, fmt)


def narration_parts(text: str) -> list[tuple[str, bool]]:
    """`text` as (part, quoted) in order: "quoted speech" (straight, curly, «», 「」 quotes; one left
    open runs to the end) apart from the narration around it, quote marks and *asterisks* dropped."""
    parts: list[tuple[str, bool]] = []
    position = 0
    for match in QUOTED.finditer(text):
        parts.append((text[position : match.start()], False))
        parts.append((match.group()[1:].rstrip('"”»」』'), True))
        position = match.end()
    parts.append((text[position:], False))
    cleaned = ((" ".join(part.replace("*", " ").split()), quoted) for part, quoted in parts)
    return [(part, quoted) for part, quoted in cleaned if part]


def sse_events(parts: Iterator[bytes], fmt: str, characters: int) -> Iterator[bytes]:
    """Encoded audio parts as OpenAI's speech events (`data: {json}` lines); a wav stream's header
    goes out with the first audio, not alone."""

    def event(body: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(body)}\n\n".encode()

    pending = b""
    try:
        for index, part in enumerate(parts):
            if fmt == "wav" and index == 0:
                pending = part
                continue
            yield event({"type": "speech.audio.delta", "audio": base64.b64encode(pending + part).decode()})
            pending = b""
    except StudioError as error:
        yield event({"type": "error", "error": {"message": error.message, "code": error.code}})
        return
    if pending:  # a whole file (from the cache) came as one part
        yield event({"type": "speech.audio.delta", "audio": base64.b64encode(pending).decode()})
    usage = {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}
    yield event({"type": "speech.audio.done", "usage": usage})
