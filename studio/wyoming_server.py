"""Wyoming protocol server: the studio's voices for Home Assistant, beside the web studio.

Home Assistant's Wyoming integration asks a server for its voices (`describe` -> `info`), then for
speech: in one go (`synthesize`), or, while an assistant is still writing its answer, as streamed
text (`synthesize-start`, `synthesize-chunk`..., `synthesize-stop`) that is spoken a sentence at a
time. Both are answered from the studio's speech service, so Home Assistant gets the same voices
(library voices included), limits, queue and fairness as the REST API. The server runs in a daemon
thread with its own event loop, so neither it nor uvicorn's loop waits on the other; synthesis runs
in worker threads, so a long answer never stalls another client.

    python app.py --wyoming tcp://0.0.0.0:10200     (or STUDIO_WYOMING_URI=tcp://0.0.0.0:10200)

An error (unknown voice, unsupported language, engine busy) is answered with an `error` event and
the connection is closed, as wyoming-piper does: Home Assistant opens one connection per request
and otherwise waits for audio that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
from wyoming.audio import AudioChunk as WyomingChunk
from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from engines.base import AudioChunk
from engines.text import base_language, canonical_language, split_sentences
from studio import __version__
from studio import audio as audio_io
from studio.errors import BadInput, StudioError
from studio.services.speech import DEFAULT_VOICE, SENTENCE_GAP_S, SpeechRequest

if TYPE_CHECKING:
    from fastapi import FastAPI

    from studio.core import Studio

log = logging.getLogger("studio.wyoming")

PROGRAM = "speech-studio"
# The studio's language codes -> the tags Home Assistant matches a pipeline's language against (the
# POSIX-style codes wyoming-piper announces, e.g. "en_US").
LANGUAGE_TAGS = {
    "en-us": "en_US",
    "en-gb": "en_GB",
    "ja": "ja_JP",
    "zh": "zh_CN",
    "es": "es_ES",
    "fr-fr": "fr_FR",
    "it": "it_IT",
    "pt-br": "pt_BR",
    "de": "de_DE",
    "hi": "hi_IN",
}
START_TIMEOUT_S = 10.0  # binding the port takes milliseconds; longer means something is wrong


def language_tags(own: str, spoken: Iterable[str]) -> list[str]:
    """Home Assistant's tags for a voice: its own language first (Home Assistant offers it there
    first), then every other language it speaks; codes with no tag are left out."""
    tags: list[str] = []
    for code in (own, *spoken):
        tag = LANGUAGE_TAGS.get(code)
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def studio_language(tag: str | None) -> str | None:
    """The studio code for a language a client names ("en_US", "ja-JP", "zh_CN", "en"), None when it
    names none; a regional variant the studio has no code for falls back to its language ("en_AU" ->
    "en-us"). BadInput for a language the studio does not speak."""
    if not tag or not tag.strip():
        return None
    try:
        return canonical_language(tag)
    except ValueError as error:
        try:
            return canonical_language(tag.replace("_", "-").split("-")[0])
        except ValueError:
            raise BadInput(str(error), "unsupported_language") from None


@dataclass(frozen=True)
class CatalogVoice:
    """A voice as Home Assistant lists it."""

    id: str
    description: str
    engine: str
    languages: tuple[str, ...]  # studio codes, its own language first

    def tts_voice(self, attribution: Attribution) -> TtsVoice:
        return TtsVoice(
            name=self.id,
            attribution=attribution,
            installed=True,
            description=self.description,
            version=None,
            languages=language_tags(self.languages[0], self.languages[1:]),
        )


class VoiceCatalog:
    """Every voice the studio can speak now, built-in then library voices, and the voice a request
    that names none gets. Read afresh on each call: library voices are made and deleted in the
    Voices tab while the server runs. Blocking (engine states, the library's database): call it from
    a worker thread."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def voices(self) -> list[CatalogVoice]:
        registry = self.studio.registry
        voices = [
            CatalogVoice(
                voice.id,
                f"{voice.name} - {registry.engine(voice.engine).info.display_name}",
                voice.engine,
                tuple(dict.fromkeys((voice.language, *voice.languages))),
            )
            for voice in registry.voices()
        ]
        listed = {voice.id for voice in voices}
        for record in self.studio.library.list():
            if record.id in listed:
                continue
            try:  # the engine that speaks it: a fitted style (Kokoro), a latent (MegaTTS3)...
                engine_name, voice_id = self.studio.speech.resolve(record.id)
            except StudioError:
                continue  # not speakable yet (not fitted): Home Assistant could not use it
            engine = registry.engine(engine_name)
            own = (record.language,) if engine.speaks(voice_id, record.language) else ()
            spoken = tuple(dict.fromkeys((*own, *engine.voice_languages(voice_id))))
            if spoken:
                voices.append(CatalogVoice(record.id, f"{record.name} - library voice", engine_name, spoken))
        return [voice for voice in voices if language_tags(voice.languages[0], voice.languages[1:])]

    def info(self) -> Info:
        """The `info` answer to `describe`: one TTS program with every voice, each attributed to its
        engine and that engine's licence."""
        registry = self.studio.registry
        attributions = {}
        for name in registry.names():
            engine_info = registry.engine(name).info
            attributions[name] = Attribution(
                name=f"{engine_info.display_name} ({engine_info.license})", url=""
            )
        program = TtsProgram(
            name=PROGRAM,
            attribution=Attribution(name="Speech Studio", url=""),
            installed=True,
            description="Speech Studio: the studio's built-in and library voices",
            version=__version__,
            voices=[voice.tts_voice(attributions[voice.engine]) for voice in self.voices()],
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    def default_voice(self, language: str | None) -> str:
        """The studio's default voice; for a language, the first voice whose own language it is
        (the exact variant first, then any variant: en-gb for en-us), else the first that speaks it.
        A language no voice speaks gets the default voice, which then says why it cannot."""
        if language is None:
            return DEFAULT_VOICE
        voices = self.voices()
        for matches in (
            lambda voice: voice.languages[0] == language,
            lambda voice: base_language(voice.languages[0]) == base_language(language),
            lambda voice: any(base_language(code) == base_language(language) for code in voice.languages),
        ):
            found = [voice.id for voice in voices if matches(voice)]
            if found:
                return DEFAULT_VOICE if DEFAULT_VOICE in found else found[0]
        return DEFAULT_VOICE


class SpeechPump:
    """Runs the speech service's sentence stream (blocking CPU work) in a thread of its own and
    hands each chunk to the event loop as it is made, so the loop keeps serving other clients and
    the first sentence goes out while the next is synthesized. When the consumer stops early (the
    client went away), the thread stops before the next sentence."""

    def __init__(self, stream: Callable[[SpeechRequest], Iterator[AudioChunk]]) -> None:
        self.stream = stream

    async def chunks(self, request: SpeechRequest) -> AsyncGenerator[AudioChunk, None]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def hand_over(item: AudioChunk | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
                loop.call_soon_threadsafe(ready.put_nowait, item)

        def produce() -> None:
            chunks = self.stream(request)
            try:
                while not stop.is_set():
                    chunk = next(chunks, None)
                    hand_over(chunk)
                    if chunk is None:
                        break
            except BaseException as error:  # raised again in the consumer
                hand_over(error)
            finally:
                if isinstance(chunks, Generator):
                    chunks.close()  # ends its admission on the engine's queue

        threading.Thread(target=produce, name="wyoming-speech", daemon=True).start()
        try:
            while (item := await ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()


class AudioAnswer:
    """The audio of one answer as Home Assistant reads it: `audio-start` once (at the engine's rate,
    when the first sentence is ready), each sentence as one `audio-chunk` of 16-bit mono PCM with the
    studio's pause before every sentence but the first, then `audio-stop`."""

    WIDTH, CHANNELS = 2, 1

    def __init__(self, write: Callable[[Event], Awaitable[None]]) -> None:
        self.write = write
        self.rate: int | None = None

    async def send(self, chunks: AsyncGenerator[AudioChunk, None]) -> None:
        async with contextlib.aclosing(chunks):  # a failed write stops the synthesis at once
            async for chunk in chunks:
                audio = chunk.audio
                if self.rate is None:
                    self.rate = chunk.sample_rate
                    start = AudioStart(rate=self.rate, width=self.WIDTH, channels=self.CHANNELS)
                    await self.write(start.event())
                elif chunk.index == 0:  # a later request's first sentence: the speech service adds no pause
                    gap = np.zeros(int(SENTENCE_GAP_S * chunk.sample_rate), np.float32)
                    audio = np.concatenate([gap, audio])
                pcm = audio_io.pcm16(audio)
                await self.write(
                    WyomingChunk(
                        rate=chunk.sample_rate, width=self.WIDTH, channels=self.CHANNELS, audio=pcm
                    ).event()
                )

    async def stop(self) -> None:
        if self.rate is not None:
            await self.write(AudioStop().event())


class SentenceBuffer:
    """Streamed text, handed out a whole sentence at a time: of the pieces `split_sentences` makes
    of what has come so far, every one but the last is finished; the last only when the stream ends."""

    def __init__(self) -> None:
        self.text = ""

    def add(self, text: str) -> list[str]:
        """The sentences `text` finished (none while the current one goes on)."""
        self.text += text
        pieces = split_sentences(self.text)
        if len(pieces) < 2:
            return []
        # The unfinished piece is kept as split (stripped): a space it ended with still separates it
        # from the next chunk's first word.
        self.text = pieces[-1] + (" " if self.text[-1:].isspace() else "")
        return pieces[:-1]

    def rest(self) -> list[str]:
        """What is left when the stream ends."""
        pieces, self.text = split_sentences(self.text), ""
        return pieces


@dataclass
class TextStream:
    """One streamed request (`synthesize-start` to `synthesize-stop`): its voice, the text not yet
    spoken and the audio sent so far."""

    voice: str
    language: str | None
    buffer: SentenceBuffer
    answer: AudioAnswer


class StudioTtsHandler(AsyncEventHandler):
    """One client connection (Home Assistant opens one per request): `describe`, `synthesize`, and
    streamed text. A `synthesize` on a connection that streams is the whole text again, which Home
    Assistant sends for servers that cannot stream; it is ignored, as wyoming-piper does."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        studio: Studio,
        catalog: VoiceCatalog,
    ) -> None:
        super().__init__(reader, writer)
        self.studio = studio
        self.catalog = catalog
        self.pump = SpeechPump(studio.speech.stream)
        peer = writer.get_extra_info("peername")
        # The engines take turns by requester: every connection from one host shares that host's turn.
        self.requester = f"wyoming-{peer[0] if isinstance(peer, tuple) and peer else 'local'}"
        self.streaming: TextStream | None = None  # the open stream, between start and stop
        self.streamed = False  # a stream was opened: from then on `synthesize` is only its echo

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event((await asyncio.to_thread(self.catalog.info)).event())
            elif Synthesize.is_type(event.type):
                if not self.streamed:
                    await self._synthesize(Synthesize.from_event(event))
            elif Ping.is_type(event.type):
                await self.write_event(Pong(text=Ping.from_event(event).text).event())
            elif SynthesizeStart.is_type(event.type):
                await self._start(SynthesizeStart.from_event(event))
            elif SynthesizeChunk.is_type(event.type):
                await self._chunk(SynthesizeChunk.from_event(event))
            elif SynthesizeStop.is_type(event.type):
                await self._stop()
            return True
        except StudioError as error:
            log.info("wyoming request refused (%s): %s", error.code, error.message)
            await self._error(error.message, error.code)
        except OSError:  # the client went away mid-answer
            pass
        except Exception as error:  # a bug: this client gets an error, the server stays up
            log.exception("wyoming request failed")
            await self._error(f"internal error: {error}", "internal_error")
        return False  # ends this connection only

    async def _error(self, text: str, code: str) -> None:
        with contextlib.suppress(OSError):
            await self.write_event(Error(text=text, code=code).event())

    async def _voice(self, voice: SynthesizeVoice | None) -> tuple[str, str | None]:
        """The studio voice and language for a request's voice: its name, else the default voice for
        its language (if any); an unknown name raises NotFound here, before any text is spoken."""
        language = studio_language(voice.language if voice else None)
        name = voice.name if voice and voice.name else None
        if name is None:
            name = await asyncio.to_thread(self.catalog.default_voice, language)
        await asyncio.to_thread(self.studio.speech.resolve, name)
        return name, language

    def _speech(
        self, text: str, voice: str, language: str | None, first: bool
    ) -> AsyncGenerator[AudioChunk, None]:
        """The speech of `text`; an answer's `first` text has a long first sentence spoken in two
        pieces (the studio's quick start: the first audio comes sooner)."""
        request = SpeechRequest(
            text=text, voice=voice, language=language, requester=self.requester, quick_start=first
        )
        return self.pump.chunks(request)

    async def _synthesize(self, request: Synthesize) -> None:
        voice, language = await self._voice(request.voice)
        answer = AudioAnswer(self.write_event)
        await answer.send(self._speech(request.text, voice, language, first=True))
        await answer.stop()

    async def _start(self, start: SynthesizeStart) -> None:
        self.streamed = True
        voice, language = await self._voice(start.voice)
        self.streaming = TextStream(voice, language, SentenceBuffer(), AudioAnswer(self.write_event))

    async def _chunk(self, chunk: SynthesizeChunk) -> None:
        if self.streaming is None:
            log.warning("wyoming synthesize-chunk outside a stream: ignored")
            return
        if sentences := self.streaming.buffer.add(chunk.text):
            await self._speak(self.streaming, sentences)

    async def _stop(self) -> None:
        stream, self.streaming = self.streaming, None
        if stream is None:
            log.warning("wyoming synthesize-stop outside a stream: ignored")
            return
        if sentences := stream.buffer.rest():
            await self._speak(stream, sentences)
        await stream.answer.stop()
        await self.write_event(SynthesizeStopped().event())

    async def _speak(self, stream: TextStream, sentences: list[str]) -> None:
        first = stream.answer.rate is None  # once audio plays, cutting a sentence only adds a pause
        await stream.answer.send(self._speech(" ".join(sentences), stream.voice, stream.language, first))


class WyomingServer:
    """The Wyoming listener on `uri` (tcp://host:port or unix://path) for `studio`, in a daemon
    thread with its own event loop; `start` returns once it listens (or raises why it cannot)."""

    def __init__(self, studio: Studio, uri: str) -> None:
        if urlparse(uri).scheme not in ("tcp", "unix"):
            raise ValueError(
                f"Wyoming URI '{uri}': use tcp://HOST:PORT (e.g. tcp://0.0.0.0:10200) or unix://PATH"
            )
        self.uri = uri
        self.studio = studio
        self.catalog = VoiceCatalog(studio)
        self.server = AsyncServer.from_uri(uri)  # ValueError for a tcp:// URI without a port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wyoming-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the Wyoming server did not start listening on {self.uri}")
        if self._failure is not None:
            raise RuntimeError(f"the Wyoming server cannot listen on {self.uri}: {self._failure}")
        log.info("wyoming server listening on %s", self.uri)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self.server.start(self._handler)
        except OSError as error:  # the port is taken, the address is not this machine's...
            self._failure = error
            return
        finally:
            self._ready.set()
        await self._stopping.wait()
        await self.server.stop()
        answering = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in answering:  # answers cut short: their synthesis threads stop before the next sentence
            task.cancel()
        await asyncio.gather(*answering, return_exceptions=True)

    def _handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> StudioTtsHandler:
        return StudioTtsHandler(reader, writer, self.studio, self.catalog)


def serve_beside(app: FastAPI, uri: str) -> WyomingServer:
    """Serve `app`'s studio over Wyoming for as long as the app runs: the listener starts once the
    studio has started (in the app's lifespan) and stops before the studio stops."""
    server = WyomingServer(app.state.studio, uri)  # a bad URI fails here, before anything starts
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as state:
            await asyncio.to_thread(server.start)
            try:
                yield state
            finally:
                await asyncio.to_thread(server.stop)

    app.router.lifespan_context = lifespan
    return server
