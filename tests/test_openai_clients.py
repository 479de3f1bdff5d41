"""OpenAI-compatible clients against a live studio, sending what their published code sends.

- Open WebUI (TTS engine "OpenAI", API base URL `http://<host>:7860/v1`): its backend lists the
  models and voices of a non-OpenAI base URL and forwards the browser's speech request, as
  `backend/open_webui/routers/audio.py` (open-webui/open-webui @ 6adde203cd29) does it:
  `get_available_models()`, `get_available_voices()` and the `TTS_ENGINE == "openai"` branch of
  `speech()`; the browser's body is `synthesizeOpenAISpeech()` in `src/lib/apis/audio/index.ts`.
- SillyTavern's "OpenAI Compatible" TTS provider (SillyTavern/SillyTavern @ ba6f7b7a98cf):
  `public/scripts/extensions/tts/index.js` lines 466-485 clean the message, `openai-compatible.js`
  lines 171-184 send it to its server, which forwards it (`src/endpoints/openai.js` lines 295-317).
- The official OpenAI SDK: every format streamed, server-sent events, and each error class.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
import pyworld
import requests
from fastapi.testclient import TestClient
from openai import InternalServerError, NotFoundError, OpenAI, RateLimitError, UnprocessableEntityError

from studio.audio import decode, media_type
from studio.services.asr import word_error_rate
from studio.services.speech import narration_parts
from tests.conftest import LiveServer, run_coroutine

SHORT = "Hello from the studio."
TWO_SENTENCES = "The train leaves at noon. Please be on time."


def pcm_audio(data: bytes) -> tuple[np.ndarray, int]:
    """OpenAI's pcm: 16-bit mono at the engine's rate (24 kHz for Kokoro)."""
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768, 24000


def assert_speech(audio: np.ndarray, rate: int, min_seconds: float = 0.5) -> None:
    seconds, rms = len(audio) / rate, float(np.sqrt(np.mean(audio**2)))
    assert seconds > min_seconds and rms > 0.02, (seconds, rms)


# ---- Open WebUI ----------------------------------------------------------------------------------
async def open_webui_speech(
    base_url: str, key: str, model: str, payload: dict, params: dict | None = None
) -> tuple[int, bytes]:
    """`speech()`, TTS_ENGINE "openai": the browser's payload with `model` set to TTS_MODEL and
    TTS_OPENAI_PARAMS (None by default) merged in, posted with aiohttp. (Its session trusts proxy
    settings from the environment; a proxy would only route the request, so here it does not.)"""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), trust_env=False) as session:
        payload["model"] = model
        payload = {**payload, **(params or {})}
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        r = await session.post(url=f"{base_url}/audio/speech", json=payload, headers=headers)
        return r.status, await r.read()


def test_open_webui_lists_models_and_voices_and_speaks(live_server: LiveServer, transcriber) -> None:  # type: ignore[no-untyped-def]
    base_url = live_server.url + "/v1"  # TTS_OPENAI_API_BASE_URL

    # get_available_models(): requests.get(f"{base}/audio/models"), then data.get("models", [])
    response = requests.get(f"{base_url}/audio/models")
    response.raise_for_status()
    models = response.json().get("models", [])
    assert {"tts-1", "tts-1-hd", "kokoro", "piper"} <= {m["id"] for m in models}, models

    # get_available_voices(): requests.get(f"{base}/audio/voices"), then {voice["id"]: voice["name"]}
    response = requests.get(f"{base_url}/audio/voices")
    response.raise_for_status()
    voices_list = response.json().get("voices", [])
    available_voices = {voice["id"]: voice["name"] for voice in voices_list}
    assert {"alloy", "echo", "fable", "onyx", "nova", "shimmer", "jf_alpha", "jm_kumo", "joe"} <= set(
        available_voices
    )

    # synthesizeOpenAISpeech(): the browser sends {input, voice, model}; the backend forwards it.
    browser = {"input": TWO_SENTENCES, "voice": "onyx", "model": "tts-1"}
    status, body = run_coroutine(open_webui_speech(base_url, "sk-open-webui", "tts-1", dict(browser)))
    assert status == 200, body[:300]
    audio, rate = decode(body)  # kept as speech/<hash>.mp3 and served as audio/mpeg
    assert_speech(audio, rate, 1.5)
    assert word_error_rate(TWO_SENTENCES, transcriber.transcribe(audio, rate, "en").text) <= 0.25

    # On an error it shows f"External: {res['error']}" with res['error'].get('message') in it.
    status, body = run_coroutine(
        open_webui_speech(base_url, "sk-open-webui", "kokoro", {**browser, "voice": "voice_001"})
    )
    error = json.loads(body)["error"]
    assert status == 404 and "'voice_001'" in error.get("message", "") and "jm_kumo" in error["message"]


# ---- SillyTavern ---------------------------------------------------------------------------------
MESSAGE = '*She looks up from the old map.* "We leave at dawn," she says. "Pack light and stay close."'


def sillytavern_text(message: str) -> str:
    """index.js processTtsQueue with the default settings (pass_asterisks off): `text.replaceAll('*',
    '')` (line 469), then `text.replace(/\\s+/g, ' ').trim()` (line 485)."""
    return " ".join(message.replace("*", "").split())


def test_sillytavern_speaks_narration_and_quotes_in_two_voices(live_server: LiveServer, transcriber) -> None:  # type: ignore[no-untyped-def]
    settings = {"provider_endpoint": live_server.url + "/v1/audio/speech", "model": "tts-1", "speed": 1}
    text = sillytavern_text(MESSAGE)
    # The forwarder's request: Authorization `Bearer ${key ?? ''}` (no key saved: "Bearer "), the
    # body JSON.stringify'd in this key order. Voice: "narrator|character" from the voice map.
    body = {
        "input": text,
        "response_format": "mp3",
        "voice": "echo|onyx",
        "speed": settings["speed"],
        "model": settings["model"],
    }
    response = requests.post(
        settings["provider_endpoint"],
        headers={"Content-Type": "application/json", "Authorization": "Bearer "},
        data=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        timeout=120,
    )
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "audio/mpeg"
    audio, rate = decode(response.content)
    assert_speech(audio, rate, 3.0)
    spoken = "She looks up from the old map. We leave at dawn, she says. Pack light and stay close."
    assert word_error_rate(spoken, transcriber.transcribe(audio, rate, "en").text) <= 0.25


def test_the_quote_voice_speaks_the_quotes(studio_client: TestClient) -> None:
    # A female narrator (nova) and a male character (onyx): the pitch drops where the quote starts.
    text = 'She looked up from the old map. "We leave at dawn and we travel light."'
    response = studio_client.post(
        "/v1/audio/speech", json={"input": text, "voice": "nova|onyx", "response_format": "wav"}
    )
    assert response.status_code == 200, response.text
    audio, rate = decode(response.content)
    narration, quote = (
        pyworld.harvest(half.astype(np.float64), rate)[0] for half in np.array_split(audio, 2)
    )
    assert np.median(narration[narration > 0]) > 1.5 * np.median(quote[quote > 0])


def test_errors_take_openai_shape_on_v1_only(studio_client: TestClient) -> None:
    error = studio_client.post("/v1/audio/speech", json={"input": "", "voice": "alloy"}).json()["error"]
    assert error == {
        "message": error["message"],
        "type": "invalid_request_error",
        "param": "input",
        "code": "empty_text",
    }
    assert set(studio_client.get("/v1/nothing").json()["error"]) == {"message", "type", "param", "code"}
    assert set(studio_client.get("/api/v1/nothing").json()["error"]) == {"code", "message"}


def test_narration_and_quotes_are_told_apart() -> None:
    assert narration_parts(MESSAGE) == [
        ("She looks up from the old map.", False),
        ("We leave at dawn,", True),
        ("she says.", False),
        ("Pack light and stay close.", True),
    ]
    assert narration_parts(sillytavern_text(MESSAGE)) == narration_parts(MESSAGE)
    assert narration_parts("He said “Hi” and «bye». 「はい」 “unclosed") == [
        ("He said", False),
        ("Hi", True),
        ("and", False),
        ("bye", True),
        (".", False),
        ("はい", True),
        ("unclosed", True),
    ]
    assert narration_parts("no quotes here") == [("no quotes here", False)]


# ---- the OpenAI SDK -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=live_server.url + "/v1", api_key="not-needed", max_retries=0)


def test_sdk_lists_the_models(client: OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[:3] == ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"] and {"kokoro", "piper"} <= set(ids)
    assert "kokoro-torch" not in ids  # it needs weights: it cannot speak here


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_sdk_streams_every_format(client: OpenAI, fmt: str) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=SHORT, response_format=fmt, speed=1.25
    ) as response:
        assert response.headers["content-type"] == media_type(fmt)
        data = b"".join(response.iter_bytes())
    assert_speech(*(pcm_audio(data) if fmt == "pcm" else decode(data)))


def sse_events(lines: Iterator[str]) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3"])
def test_sdk_server_sent_events(client: OpenAI, fmt: str) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="coral",
        input=TWO_SENTENCES,
        response_format=fmt,
        stream_format="sse",
        instructions="Speak like a cheerful tour guide.",
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-instructions"] == "ignored"
        events = sse_events(response.iter_lines())
    *deltas, done = events
    assert len(deltas) >= 2 and {e["type"] for e in deltas} == {"speech.audio.delta"}  # one per sentence
    assert done["type"] == "speech.audio.done" and done["usage"]["input_tokens"] == len(TWO_SENTENCES)
    data = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert_speech(*(pcm_audio(data) if fmt == "pcm" else decode(data)), min_seconds=1.5)


def test_sdk_raises_the_matching_errors(client: OpenAI) -> None:
    with pytest.raises(NotFoundError) as found:
        client.audio.speech.create(model="tts-1", voice="nobody", input=SHORT)
    assert (found.value.code, found.value.param, found.value.type) == (
        "unknown_voice",
        "voice",
        "invalid_request_error",
    )
    with pytest.raises(UnprocessableEntityError) as invalid:
        client.audio.speech.create(model="tts-1", voice="alloy", input=SHORT, speed=9)
    assert invalid.value.code == "invalid_input" and invalid.value.param == "speed"
    with pytest.raises(UnprocessableEntityError) as invalid:
        client.audio.speech.create(model="dall-e-3", voice="alloy", input=SHORT)
    assert invalid.value.code == "unknown_model" and invalid.value.param == "model"
    with pytest.raises(InternalServerError) as unavailable:  # 503: kokoro-torch has no weights here
        client.audio.speech.create(model="kokoro-torch", voice="alloy", input=SHORT)
    assert unavailable.value.status_code == 503 and unavailable.value.code == "engine_unavailable"
    assert "kokoro-v1_0.pth" in unavailable.value.message


def test_sdk_waits_as_retry_after_says(tmp_path_factory: pytest.TempPathFactory) -> None:
    limits = {"STUDIO_RATE_LIMIT_PER_MINUTE": "20", "STUDIO_RATE_LIMIT_BURST": "1"}  # a token per 3 s
    server = LiveServer(tmp_path_factory.mktemp("rate_limited"), limits).start()
    try:
        sdk = OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)
        with pytest.raises(NotFoundError):  # takes the one token, answered at once
            sdk.audio.speech.create(model="tts-1", voice="nobody", input=SHORT)
        with pytest.raises(RateLimitError) as limited:
            sdk.audio.speech.create(model="tts-1", voice="alloy", input=SHORT)
        retry_after = float(limited.value.response.headers["retry-after"])
        assert limited.value.code == "rate_limited" and 2 <= retry_after <= 3

        started = time.monotonic()
        audio = sdk.with_options(max_retries=1).audio.speech.create(
            model="tts-1", voice="alloy", input=SHORT, response_format="wav"
        )
        waited = time.monotonic() - started
        assert_speech(*decode(audio.content))
        assert waited >= 1.5, waited  # it waited as told: its own first backoff is under a second
    finally:
        server.stop()
