"""The embedded engines speak real words; the registry loads lazily, once, and reports the truth."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engines.base import EngineState, SynthesisOptions, UnknownVoice
from engines.gpu import GpuAllocator
from engines.kokoro_onnx import KokoroOnnxEngine, parse_blend
from engines.piper import PiperEngine
from engines.registry import EngineRegistry
from studio.services.asr import word_error_rate

SENTENCES = "The weather is lovely today. Let us walk to the park."


@pytest.fixture(scope="module")
def kokoro(shared_cache: Path) -> KokoroOnnxEngine:
    return KokoroOnnxEngine(Path("weights"), GpuAllocator([]), cache_dir=shared_cache / "kokoro")


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine(Path("weights"), GpuAllocator([]))


def spoken(chunks: list) -> tuple[np.ndarray, int]:  # type: ignore[type-arg]
    return np.concatenate([c.audio for c in chunks]), chunks[0].sample_rate


@pytest.mark.parametrize("voice", ["jf_alpha", "jm_kumo", "jf_tebukuro*0.6+jm_kumo*0.4"])
def test_kokoro_speaks_the_words(kokoro: KokoroOnnxEngine, transcriber, voice: str) -> None:  # type: ignore[no-untyped-def]
    chunks = list(kokoro.synthesize(SENTENCES, voice))
    assert [c.text for c in chunks] == ["The weather is lovely today.", "Let us walk to the park."]
    audio, rate = spoken(chunks)
    assert rate == 24000 and 2.0 < len(audio) / rate < 8.0
    for chunk in chunks:  # kokoro-onnx's phoneme times, from the durations the graph now reports
        spans = chunk.phonemes
        assert all(0 <= s.start <= s.end <= chunk.duration + 1e-3 for s in spans)
        assert [s.start for s in spans] == sorted(s.start for s in spans)
        assert spans[-1].end == pytest.approx(chunk.duration, abs=0.05)
    assert "p" in {s.phoneme for s in chunks[1].phonemes}  # "park"
    assert np.sqrt(np.mean(audio**2)) > 0.02
    assert word_error_rate(SENTENCES, transcriber.transcribe(audio, rate).text) <= 0.2


def test_kokoro_speaks_japanese(kokoro: KokoroOnnxEngine) -> None:
    chunks = list(
        kokoro.synthesize("こんにちは。今日はいい天気ですね。", "jf_alpha", SynthesisOptions(language="ja"))
    )
    audio, rate = spoken(chunks)
    assert len(chunks) == 2 and len(audio) / rate > 1.5 and np.sqrt(np.mean(audio**2)) > 0.02


def test_kokoro_speed_changes_duration(kokoro: KokoroOnnxEngine) -> None:
    normal, _ = spoken(list(kokoro.synthesize(SENTENCES, "jf_alpha")))
    fast, _ = spoken(list(kokoro.synthesize(SENTENCES, "jf_alpha", SynthesisOptions(speed=1.5))))
    assert len(fast) < 0.8 * len(normal)


def test_blends_are_weighted_sums_of_packs(kokoro: KokoroOnnxEngine) -> None:
    assert parse_blend("jf_alpha*3+jm_kumo") == [("jf_alpha", 0.75), ("jm_kumo", 0.25)]
    blend = kokoro.style("jf_alpha+jm_kumo")
    assert np.allclose(blend, (kokoro.style("jf_alpha") + kokoro.style("jm_kumo")) / 2, atol=1e-6)
    for bad in ["nobody", "jf_alpha*0", "jf_alpha+", "jf_alpha*x"]:
        with pytest.raises(UnknownVoice):
            kokoro.check_voice(bad)


def test_piper_speaks_the_words(piper: PiperEngine, transcriber) -> None:  # type: ignore[no-untyped-def]
    # Piper samples noise inside its ONNX graph, so the default voice varies from call to call
    # (about 1 in 20 takes of this sentence is heard as "But whether..."); without noise it
    # is the same audio every time and the words are checked on that.
    steady = SynthesisOptions(extra={"noise_scale": 0.0, "noise_w_scale": 0.0})
    chunks = list(piper.synthesize(SENTENCES, "en_US-joe-medium", steady))
    audio, rate = spoken(chunks)
    again, _ = spoken(list(piper.synthesize(SENTENCES, "en_US-joe-medium", steady)))
    assert rate == 22050 and 2.0 < len(audio) / rate < 8.0
    assert np.array_equal(audio, again)
    assert word_error_rate(SENTENCES, transcriber.transcribe(audio, rate).text) <= 0.2
    varied, _ = spoken(list(piper.synthesize(SENTENCES, "en_US-joe-medium")))
    assert 2.0 < len(varied) / rate < 8.0 and np.sqrt(np.mean(varied**2)) > 0.02
    # Piper says where each phoneme is: back to back from 0 to the chunk's end ("park" has its p).
    for chunk in chunks:
        spans = chunk.phonemes
        assert spans[0].start == 0.0 and spans[-1].end == pytest.approx(chunk.duration, abs=1e-3)
        assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(spans))
    assert "p" in {span.phoneme for span in chunks[1].phonemes}


def test_first_chunk_arrives_before_the_rest_is_made(kokoro: KokoroOnnxEngine) -> None:
    kokoro.ensure_loaded()
    stream = kokoro.synthesize(
        "One short line. " + "A much longer sentence follows it here. " * 6, "jf_alpha"
    )
    first = next(stream)
    assert first.index == 0 and first.text == "One short line."
    assert len(list(stream)) == 6


class CountingPiper(PiperEngine):
    """The real Piper engine, counting how often it loads."""

    loads = 0

    def _load(self) -> None:
        type(self).loads += 1
        super()._load()


def test_registry_loads_lazily_once_under_concurrency_and_unloads(tmp_path: Path) -> None:
    registry = EngineRegistry(tmp_path, GpuAllocator([]))
    engine = registry.add(CountingPiper(tmp_path, registry.allocator))
    assert engine.status().state == EngineState.READY and not engine.is_loaded
    assert CountingPiper.loads == 0  # listing voices and states loads nothing
    assert [v.id for v in registry.voices()] == ["joe"]

    threads = [threading.Thread(target=registry.loaded, args=("piper",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert CountingPiper.loads == 1 and engine.is_loaded
    assert registry.reports()[0].state == "loaded"

    registry.unload("piper")
    assert not engine.is_loaded and registry.reports()[0].state == "ready"
    with pytest.raises(KeyError, match="unknown engine 'nope'"):
        registry.engine("nope")
    assert registry.engine("Piper") is registry.engine(" piper ") is engine  # as clients spell it


def test_engine_names_are_found_as_their_environments_spell_them(tmp_path: Path) -> None:
    from studio.core import build_registry
    from tests.conftest import make_settings

    registry = build_registry(make_settings(tmp_path), GpuAllocator([]))
    assert registry.engine("gpt-sovits") is registry.engine("gpt_sovits")
    assert registry.engine("moss_ttsd") is registry.engine("MOSS-TTSD") is registry.engine("moss-ttsd")


def test_kokoro_torch_reports_needs_weights_with_the_path(tmp_path: Path) -> None:
    from engines.kokoro_torch import KokoroTorchEngine

    status = KokoroTorchEngine(tmp_path, GpuAllocator([])).status()
    assert status.state == EngineState.NEEDS_WEIGHTS
    assert any(str(tmp_path / "Kokoro-82M" / "kokoro-v1_0.pth") in line for line in status.missing)


def test_kokoro_speaks_mandarin(kokoro: KokoroOnnxEngine) -> None:
    chunks = list(
        kokoro.synthesize("你好，欢迎来到我们的节目。", "jf_alpha", SynthesisOptions(language="zh"))
    )
    audio, rate = spoken(chunks)
    assert len(audio) / rate > 1.0 and np.sqrt(np.mean(audio**2)) > 0.02


def test_interactive_callers_go_before_background_work() -> None:
    from engines.base import RunQueue, background_work

    lock, order = RunQueue(), []
    holder_in, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            holder_in.set()
            release.wait(5)

    def take(name: str, background: bool) -> None:
        background_work.set(background)
        with lock:
            order.append(name)

    threading.Thread(target=hold).start()
    holder_in.wait(5)
    waiters = [threading.Thread(target=take, args=("task", True))]
    waiters[0].start()
    time.sleep(0.1)  # the task queued first...
    waiters.append(threading.Thread(target=take, args=("request", False)))
    waiters[1].start()
    time.sleep(0.1)
    release.set()
    for waiter in waiters:
        waiter.join(5)
    assert order == ["request", "task"]  # ...but the interactive request went first


def test_background_work_still_gets_every_fourth_turn_under_steady_requests() -> None:
    from engines.base import RunQueue, background_work

    lock, order = RunQueue(), []
    stop = threading.Event()

    def requests(name: str) -> None:  # two clients that always want the model again at once
        while not stop.is_set():
            with lock:
                order.append(name)
                time.sleep(0.005)

    def task() -> None:
        background_work.set(True)
        for _ in range(3):
            with lock:
                order.append("task")
                time.sleep(0.005)

    clients = [threading.Thread(target=requests, args=(f"r{i}",)) for i in range(2)]
    for client in clients:
        client.start()
    time.sleep(0.05)
    worker = threading.Thread(target=task)
    worker.start()
    worker.join(10)
    stop.set()
    for client in clients:
        client.join(5)
    assert not worker.is_alive() and order.count("task") == 3  # not starved
    turns = [i for i, name in enumerate(order) if name == "task"]
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    assert all(2 <= gap <= RunQueue.FAIR_EVERY + 1 for gap in gaps), order  # requests still get most turns
