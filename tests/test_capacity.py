"""Capacity under load: clients take turns on an engine, a full queue says busy with an honest
Retry-After, identical requests come from the cache byte for byte, and a stream's first audio
leaves before its first sentence could have been made whole."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from engines.base import RunQueue
from studio.audio import decode
from studio.server import create_app
from studio.services.asr import word_error_rate
from studio.services.speech_cache import CachedSpeech, SpeechCache
from tests.conftest import make_settings

KEYS = ("alice-key-0123", "bob-key-4567")
SENTENCE = "The little boat sailed slowly across the quiet bay."


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A studio whose Kokoro runs one sentence at a time (one thread), with two API keys."""
    settings = make_settings(tmp_path_factory.mktemp("capacity"), onnx_threads=1, api_keys=list(KEYS))
    with TestClient(create_app(settings)) as client:
        warm = client.post(
            "/api/v1/tts/synthesize",
            json={"text": "Warming up.", "voice_id": "jm_kumo"},
            headers=auth(KEYS[0]),
        )
        assert warm.status_code == 200
        client.app.state.studio.speech.admission.max_wait_s = 0  # never busy, unless a test says so
        yield client


def test_waiting_callers_are_served_round_robin_by_requester() -> None:
    queue, order = RunQueue(capacity=1), []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with queue.turn("alice"):
            holding.set()
            release.wait(5)

    def take(requester: str, name: str) -> None:
        with queue.turn(requester):
            order.append(name)

    threading.Thread(target=hold).start()
    holding.wait(5)
    waiters = []
    for name in ("a1", "a2", "a3", "b1", "b2"):  # alice queues three turns before bob's two
        waiters.append(threading.Thread(target=take, args=(name[0], name)))
        waiters[-1].start()
        time.sleep(0.05)
    release.set()
    for waiter in waiters:
        waiter.join(5)
    assert order == ["a1", "b1", "a2", "b2", "a3"]  # turn about, not first come first served


@pytest.mark.slow
def test_a_client_with_many_requests_does_not_hold_the_engine(one_slot: TestClient) -> None:
    """Alice sends three 3-sentence requests at once; Bob sends one just after. Bob gets every other
    turn, so his request finishes before any of hers (first come, first served: about together)."""
    text = " ".join(f"{SENTENCE[:-1]} number {n}." for n in range(3))
    finished: dict[str, float] = {}
    statuses: list[int] = []

    def speak(name: str, key: str) -> None:
        response = one_slot.post(
            "/api/v1/tts/synthesize",
            json={"text": f"{name}. {text}", "voice_id": "jm_kumo"},
            headers=auth(key),
        )
        statuses.append(response.status_code)
        finished[name] = time.monotonic()

    clients = [threading.Thread(target=speak, args=(f"Alice {i}", KEYS[0])) for i in range(3)]
    for client in clients:
        client.start()
    time.sleep(0.3)
    bob = threading.Thread(target=speak, args=("Bob", KEYS[1]))
    bob.start()
    for thread in [*clients, bob]:
        thread.join(120)
    assert statuses == [200] * 4
    assert all(finished["Bob"] < finished[f"Alice {i}"] for i in range(3)), finished


def test_a_full_queue_answers_busy_with_an_honest_retry_after(one_slot: TestClient) -> None:
    studio = one_slot.app.state.studio  # type: ignore[attr-defined]
    kokoro = studio.registry.engine("kokoro")
    studio.speech.admission.max_wait_s = 2.0
    long_text = " ".join(f"{SENTENCE[:-1]} part {n}." for n in range(6))  # ~20 s of speech queued at once
    first: dict[str, httpx.Response] = {}

    def long_request() -> None:
        first["response"] = one_slot.post(
            "/api/v1/tts/synthesize", json={"text": long_text, "voice_id": "jm_kumo"}, headers=auth(KEYS[0])
        )

    try:
        worker = threading.Thread(target=long_request)
        worker.start()
        deadline = time.monotonic() + 30
        while studio.speech.admission.waiting_seconds(kokoro) <= 2.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        busy = one_slot.post(
            "/api/v1/tts/synthesize", json={"text": SENTENCE, "voice_id": "jm_kumo"}, headers=auth(KEYS[1])
        )
        openai = one_slot.post(
            "/v1/audio/speech", json={"input": SENTENCE, "voice": "echo"}, headers=auth(KEYS[1])
        )
        predicted = studio.speech.admission.waiting_seconds(kokoro)
        worker.join(120)
    finally:
        studio.speech.admission.max_wait_s = 0
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy", busy.text
    assert "retry in" in busy.json()["error"]["message"]
    retry_after = int(busy.headers["Retry-After"])
    assert 1 <= retry_after <= predicted + 5  # when the queue will have drained to the bound
    assert openai.status_code == 503 and int(openai.headers["Retry-After"]) >= 1
    assert first["response"].status_code == 200  # the admitted request was not harmed
    assert float(first["response"].headers["X-Audio-Duration"]) > 15
    again = one_slot.post(
        "/api/v1/tts/synthesize", json={"text": SENTENCE, "voice_id": "jm_kumo"}, headers=auth(KEYS[1])
    )
    assert again.status_code == 200  # once the queue drained, the same request is served


@pytest.mark.parametrize(
    ("route", "body", "faster"),
    [
        ("/api/v1/tts/synthesize", {"text": "A cached answer, made {n} time.", "voice_id": "joe"}, {"parameters": {"speed": 1.5}}),
        ("/v1/audio/speech", {"input": "A cached answer, made {n} time.", "voice": "alloy", "response_format": "mp3"}, {"speed": 1.5}),
    ],
)  # fmt: skip
def test_an_identical_request_is_answered_from_the_cache_byte_for_byte(
    studio_client: TestClient, route: str, body: dict[str, str], faster: dict[str, object]
) -> None:
    field = "text" if "text" in body else "input"
    body = {**body, field: body[field].format(n=time.monotonic_ns())}  # new to this run's cache
    made = studio_client.post(route, json=body)
    cached = studio_client.post(route, json=body)
    assert made.status_code == cached.status_code == 200
    assert (made.headers["X-Cache"], cached.headers["X-Cache"]) == ("miss", "hit")
    assert cached.content == made.content
    audio, rate = decode(cached.content)
    assert len(audio) / rate > 1.0 and np.sqrt(np.mean(audio**2)) > 0.01
    other = studio_client.post(route, json={**body, **faster})
    assert other.headers["X-Cache"] == "miss" and other.content != made.content


def test_the_cache_keeps_to_its_size_dropping_the_least_recently_used(tmp_path: Path) -> None:
    cache = SpeechCache(tmp_path, max_bytes=2500)
    for name in ("old", "used", "new"):
        cache.put(name, CachedSpeech(name.encode() * 300, 1.0, 24000))  # 900-1200 bytes each
        time.sleep(0.02)
        if name == "used":
            assert cache.get("old") is not None  # "old" is now used more recently than "used"
    assert cache.get("used") is None  # dropped to keep under 2500 bytes
    assert cache.get("old") is not None and cache.get("new") is not None


@pytest.mark.parametrize(
    ("sentence", "head"),
    [
        ("Welcome back to the studio, where every voice you bring is kept for the team.", "Welcome back to the studio,"),
        ("Have you decided where we should go on holiday with the whole family this year?", "Have you decided"),
        ("今天天气很好，我们一起去公园散步吧，好不好？", "今天天气很好，"),
        ("Short, and sweet.", None),  # short: one chunk
        ("Supercalifragilisticexpialidocious words never stop in this very long sentence.", None),  # no place
    ],
)  # fmt: skip
def test_a_long_first_sentence_is_cut_at_a_clause_never_inside_a_word(
    sentence: str, head: str | None
) -> None:
    from engines.text import quick_start_head

    assert quick_start_head(sentence) == head
    if head:
        assert sentence.startswith(head) and (head[-1] in ",，" or sentence[len(head)] == " ")


@pytest.mark.slow
def test_the_first_streamed_audio_leaves_before_the_first_sentence_is_made(  # type: ignore[no-untyped-def]
    live_server, transcriber
) -> None:
    run = time.monotonic_ns() % 1000  # texts new to the server's cache
    first_sentence = (
        f"Good morning {run}, and welcome back to the studio where every voice you bring is kept "
        "safely in the library for the whole team to use."
    )
    text = f"{first_sentence} The second sentence is short. The third one ends it."

    def first_audio_and_total(spoken: str) -> tuple[float, float, bytes]:
        body = {"model": "tts-1", "input": spoken, "voice": "echo", "response_format": "pcm"}
        started = time.monotonic()
        with httpx.stream("POST", live_server.url + "/v1/audio/speech", json=body, timeout=120) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            first = next(chunk for chunk in chunks if chunk)
            first_at = time.monotonic() - started
            audio = first + b"".join(chunks)
        return first_at, time.monotonic() - started, audio

    first_audio_and_total(f"Warm up {run}.")
    sentence_alone = min(first_audio_and_total(first_sentence + f" {i}")[1] for i in range(2))
    first_at, _, audio = first_audio_and_total(text)
    assert first_at < sentence_alone, (first_at, sentence_alone)
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768
    heard = transcriber.transcribe(samples, 24000, "en").text
    assert word_error_rate(text, heard) <= 0.25, heard  # split at the comma, nothing lost
