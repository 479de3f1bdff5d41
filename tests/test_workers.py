"""Engine workers (engines/worker.py) with the tiny random-weight Kokoro model of tests/kokoro_tiny.py:
the same audio as in-process, a SIGKILLed worker, cancel, idle exit."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from engines.base import AudioChunk, EngineUnavailable, SynthesisOptions
from engines.gpu import GpuAllocator
from engines.kokoro_torch import KokoroTorchEngine
from engines.worker import CallCancelled, WorkerProcess
from tests.kokoro_tiny import FILTERWARNINGS, LONG_TEXT, build_weights

pytestmark = [pytest.mark.filterwarnings(rule) for rule in FILTERWARNINGS]

TARGET = "engines.kokoro_torch:KokoroTorchEngine"
TEXT = "Hello world. This is a test of the worker."
# 120 short sentences: seconds of work in all, a fraction of a second per chunk (cancel acts between chunks)
MANY = "The quick brown fox jumps over the lazy dog. " * 120


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def worker(weights_dir: Path) -> Iterator[WorkerProcess]:
    """One worker for the request tests (a start is seconds of imports): each test leaves it serving."""
    worker = WorkerProcess(TARGET, weights_dir, name="kokoro-torch")
    yield worker
    worker.stop()
    assert not worker.scratch.exists()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_worker_audio_is_the_in_process_audio(worker: WorkerProcess, weights_dir: Path) -> None:
    direct = KokoroTorchEngine(weights_dir, GpuAllocator([]), in_process=True)
    direct.ensure_loaded()  # loading draws random numbers (the model's init): seed after it, as the worker does
    try:
        torch.manual_seed(0)  # the harmonic source adds random noise
        expected = list(direct.synthesize(TEXT, "yy_test"))
        torch.manual_seed(0)
        expected_one, _ = direct._synthesize_timed(LONG_TEXT[:800], "xx_test", SynthesisOptions(speed=1.2))
    finally:
        direct.unload()

    got = worker.call("synthesize", TEXT, "yy_test", seed=0)
    assert worker.pid != os.getpid() and worker.load_result["pid"] == worker.pid
    assert all(isinstance(chunk, AudioChunk) for chunk in got)
    assert [(c.text, c.index, c.sample_rate) for c in got] == [
        (c.text, c.index, c.sample_rate) for c in expected
    ]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.audio.dtype == np.float32 and np.abs(mine.audio).max() > 0
        np.testing.assert_allclose(mine.audio, theirs.audio, rtol=0, atol=1e-6)

    audio, phonemes = worker.call(
        "synthesize_sentence", LONG_TEXT[:800], "xx_test", SynthesisOptions(speed=1.2), seed=0
    )
    np.testing.assert_allclose(audio, expected_one, rtol=0, atol=1e-6)
    assert phonemes == []
    assert not list(worker.scratch.glob("*.npy"))  # every audio file was read back and removed


def test_stream_yields_chunks_as_they_come(worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # A chunk can take seconds on loaded cores: this test is that leaving the stream is honoured at the
    # next chunk, not that it comes within the default 3 s before the worker is stopped instead.
    monkeypatch.setattr(worker, "cancel_grace_s", 15.0)
    started = time.monotonic()
    first_at = None
    count = 0
    for chunk in worker.stream("synthesize", MANY, "xx_test"):
        first_at = first_at or time.monotonic()
        assert chunk.index == count
        count += 1
        if count == 3:
            break  # leaving early cancels the call; the worker stays and serves the next request
    assert first_at is not None and count == 3
    pid = worker.pid
    assert len(worker.call("synthesize", "One more.", "xx_test")) == 1
    assert worker.pid == pid
    assert time.monotonic() - started < 60


def test_not_served_and_errors_keep_their_class(worker: WorkerProcess) -> None:
    worker.start()
    starts = worker.starts
    with pytest.raises(ValueError, match="not served"):
        worker.call("_load_model")
    with pytest.raises(ValueError, match="en-us and en-gb"):
        worker.call("synthesize", "Konnichiwa.", "xx_test", SynthesisOptions(language="ja"))
    assert worker.starts == starts  # errors in a request do not cost the worker


def test_sigkill_mid_request_then_a_new_worker(worker: WorkerProcess) -> None:
    worker.start()
    first, starts = worker.pid, worker.starts
    assert first is not None
    chunks = []
    with pytest.raises(EngineUnavailable) as raised:
        for chunk in worker.stream("synthesize", MANY, "xx_test"):
            chunks.append(chunk)
            if len(chunks) == 1:
                os.kill(first, signal.SIGKILL)
    message = str(raised.value)
    assert "kokoro-torch worker stopped (killed by SIGKILL) while running synthesize" in message
    assert "the next request starts a new one" in message
    assert len(chunks) < 120
    assert _gone(first)

    again = worker.call("synthesize", TEXT, "xx_test")
    assert [chunk.text for chunk in again] == ["Hello world.", "This is a test of the worker."]
    assert worker.pid not in (None, first) and worker.starts == starts + 1


def test_cancel_ends_a_long_call_within_5_s(worker: WorkerProcess) -> None:
    worker.start()
    pid = worker.pid
    first_chunk = threading.Event()
    outcome: dict[str, object] = {}

    def run() -> None:
        count = 0
        try:
            for _ in worker.stream("synthesize", MANY * 3, "xx_test"):
                count += 1
                first_chunk.set()
            outcome["result"] = count
        except BaseException as error:
            outcome["error"] = error
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    assert first_chunk.wait(60)
    asked = time.monotonic()
    worker.cancel()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), CallCancelled), outcome
    assert outcome["ended"] - asked < 5  # type: ignore[operator]
    assert worker.pid == pid  # it stopped at the next chunk: no need to kill the worker
    assert len(worker.call("synthesize", "Still here.", "xx_test")) == 1


@pytest.mark.slow
def test_engine_runs_in_a_worker_survives_its_death_and_idles_out_giving_its_lease_back(
    weights_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engines.worker")
    allocator = GpuAllocator([])
    engine = KokoroTorchEngine(weights_dir, allocator)
    engine.worker_idle_exit_s = 3
    try:
        assert engine.worker is None and engine.voices()  # voices and status: no worker
        chunks = list(engine.synthesize(TEXT, "xx_test"))
        assert len(chunks) == 2 and engine.is_loaded and len(allocator.leases()) == 1
        assert engine.worker is not None
        first = engine.worker.pid
        assert first is not None and psutil.Process(first).is_running()
        os.kill(first, signal.SIGKILL)  # between requests: the next one just starts a new worker
        deadline = time.monotonic() + 10
        while not _gone(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(engine.synthesize("Once more.", "xx_test"))) == 1
        second = engine.worker.pid
        assert second not in (None, first)

        # Idle: the worker leaves, the engine unloads and its lease goes back.
        deadline = time.monotonic() + 30
        while engine.is_loaded and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not engine.is_loaded and engine.worker is None and allocator.leases() == []
        assert second is not None and _gone(second)
        assert any("idle for 3 s" in record.getMessage() for record in caplog.records)  # its own word, logged
        assert len(list(engine.synthesize("Back again.", "xx_test"))) == 1  # loads again, a new lease
        assert engine.is_loaded and len(allocator.leases()) == 1
        worker = engine.worker
        assert worker is not None
        engine.unload()
        assert engine.worker is None and not worker.alive and not worker.scratch.exists()
    finally:
        engine.unload()
    assert allocator.leases() == []
