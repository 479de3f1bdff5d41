"""MOSS-TTSD v1.0 for real: upstream's MossTTSDelay and MOSS-Audio-Tokenizer classes, tiny random
weights saved in the hub's layout (tests/moss_tiny.py), loaded and run by the adapter's own code in
its worker, on its own pinned environment (installed here for real when it is not yet: ~2 min).

The fixture's model writes exactly N audio frames per generation (hand-set weights: see
tests/moss_tiny.py), so what upstream really did is checked by length: N frames of 1920 samples of
decoded audio, the same whatever the text, the seed and the references.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from engines.base import SynthesisOptions
from engines.environment import EngineEnvironment
from engines.gpu import GpuAllocator
from engines.moss_ttsd import MossTtsdEngine
from studio.core import Studio
from studio.services.dialogue import DialogueConfig
from studio.tasks.records import TaskStatus
from tests.conftest import make_settings, wait_for_task
from tests.engine_checks import ready

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream"
FRAMES = 12
pytestmark = pytest.mark.skipif(
    not (UPSTREAM / "MOSS-TTS" / "moss_tts_delay").is_dir()
    or not (UPSTREAM / "MOSS-Audio-Tokenizer").is_dir(),
    reason=f"MOSS-TTSD v1.0's upstream code is not at {UPSTREAM} (MOSS-TTS, MOSS-Audio-Tokenizer)",
)
SCRIPT = (
    "[S1] Welcome back to the show, everyone.\n"
    "[S2] Thanks for having me, it is great to be here.\n"
    "[S3] 大家好，很高兴参加今天的节目。\n"
    "[S1] Let us get started then."
)


@pytest.fixture(scope="module")
def environment() -> EngineEnvironment:
    """moss-ttsd's environment, installed from the registries unless it is ready (reused after)."""
    return ready(MossTtsdEngine(ROOT / "weights", GpuAllocator([])).environment())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, environment: EngineEnvironment) -> dict[str, Any]:
    """Tiny v1.0 model and codec folders under a weights folder, and what one generation gives."""
    weights = tmp_path_factory.mktemp("moss-weights")
    builder = [environment.python() or "", str(ROOT / "tests" / "moss_tiny.py"), str(weights)]
    out = subprocess.run(
        [*builder, "--frames", str(FRAMES), "--upstream", str(UPSTREAM)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["frames"] == FRAMES and facts["sample_rate"] == 24000
    return {**facts, "weights": weights}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny: dict[str, Any]) -> Iterator[TestClient]:
    from studio.server import create_app

    data = tmp_path_factory.mktemp("moss-studio")
    app = create_app(make_settings(data, weights_dir=tiny["weights"]))
    with TestClient(app) as client:
        yield client


def test_the_tiny_v1_weights_make_moss_ttsd_usable(client: TestClient) -> None:
    engines = {e["name"]: e for e in client.get("/api/v1/engines").json()["engines"]}
    moss = engines["moss-ttsd"]
    assert moss["state"] == "ready", moss["missing"]
    assert moss["environment"] == "moss-ttsd" and moss["environment_state"] == "ready"


def test_a_three_speaker_dialogue_runs_in_its_worker(
    client: TestClient, tiny: dict[str, Any], environment: EngineEnvironment
) -> None:
    response = client.post(
        "/api/v1/dialogue",
        json={"script": SCRIPT, "engine": "moss-ttsd", "voices": {"S3": "jf_alpha"}, "wait": True},
    )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed", task.get("error_message")
    result = task["result"]
    assert result["turns"] == 4 and len(result["speakers"]) == 3
    assert {s["engine"] for s in result["speakers"].values()} == {"moss-ttsd"}
    assert result["speakers"]["S3"]["voice"] == "jf_alpha"  # the chosen voice: its clip was the reference

    # Upstream generated exactly FRAMES frames for the one chunk, decoded at 1920 samples a frame.
    audio, rate = sf.read(_file(client, task, "dialogue.wav"))
    assert rate == 24000
    # Upstream trims the prompt's share off the decoded audio in floating point: for some prompt
    # lengths one sample more stays (tests/moss_tiny.py, trimmed_samples).
    assert tiny["expected_samples"] == FRAMES * tiny["samples_per_frame"]
    assert len(audio) - tiny["expected_samples"] in (0, 1)
    assert np.isfinite(audio).all()

    timing = json.loads(_file(client, task, "timing.json").read_text(encoding="utf-8"))
    assert [t["speaker"] for t in timing] == ["S1", "S2", "S3", "S1"]
    assert all(t["engine"] == "moss-ttsd" and t.get("estimated") for t in timing)
    assert timing[0]["start"] == 0 and abs(timing[-1]["end"] - len(audio) / rate) < 0.01
    srt = _file(client, task, "dialogue.srt").read_text(encoding="utf-8")
    assert srt.count(" --> ") == 4 and "[S3] 大家好" in srt

    # The model ran in a worker on the engine's own interpreter, not in the studio.
    engine = client.app.state.studio.registry.engine("moss-ttsd")
    assert engine.worker is not None and engine.worker.alive and engine.worker.pid != os.getpid()
    assert engine.worker.python == environment.python() != sys.executable
    assert engine.worker.load_result["device"] == "cpu"


def test_length_does_not_depend_on_text_seed_or_references(tiny: dict[str, Any], tmp_path: Path) -> None:
    """Straight through the engine (its worker): two speakers and no references (generation mode),
    then five speakers each with a reference clip (continuation): FRAMES frames each time."""
    engine = MossTtsdEngine(tiny["weights"], GpuAllocator([]))
    try:
        plain = engine.synthesize_dialogue(
            "[S1]Hello.[S2]Hi there!", None, SynthesisOptions(extra={"seed": 1})
        )
        prompts = []
        for n in range(1, 6):
            clip = tmp_path / f"ref{n}.wav"
            sf.write(
                clip, 0.1 * np.sin(np.arange(16000 * n // 2) * 0.05 * n), 16000
            )  # another rate: resampled
            prompts.append((clip, f"I am speaker number {n}."))
        five = "".join(f"[S{n}]Line {n} of the script." for n in range(1, 6))
        cloned = engine.synthesize_dialogue(five, prompts, SynthesisOptions(extra={"seed": 2}))
        assert len(cloned) - tiny["expected_samples"] in (0, 1)  # see the dialogue test
        # Without references the model opens its own audio block: one frame more (see moss_tiny.py).
        assert len(plain) == tiny["expected_samples_generation_mode"]
        assert plain.dtype == cloned.dtype == np.float32
        assert engine.worker is not None and engine.worker.starts == 1  # loaded once, served twice
    finally:
        engine.unload()
    assert engine.worker is None


def test_a_killed_worker_fails_that_task_and_the_next_one_starts_a_new_worker(client: TestClient) -> None:
    engine = client.app.state.studio.registry.engine("moss-ttsd")
    engine.ensure_loaded()
    assert engine.worker is not None
    first_pid = engine.worker.pid

    def kill_once_generating() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and engine.worker is not None and not engine.worker.busy:
            time.sleep(0.005)  # a request is in flight once it has a cancel token
        os.kill(first_pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_generating)
    killer.start()
    created = client.post("/api/v1/dialogue", json={"script": SCRIPT, "engine": "moss-ttsd"}).json()
    killer.join()
    failed = wait_for_task(client, created["task_id"], timeout=120)
    assert failed["status"] == "failed"
    assert "the moss-ttsd worker stopped (killed by SIGKILL)" in failed["error_message"]
    assert "the next request starts a new one" in failed["error_message"]
    assert client.get("/health").json()["status"] == "healthy"

    again = client.post(
        "/api/v1/dialogue", json={"script": SCRIPT, "engine": "moss-ttsd", "wait": True}
    ).json()
    assert again["status"] == "completed", again.get("error_message")
    assert engine.worker is not None and engine.worker.pid != first_pid


@pytest.mark.slow
def test_cancel_ends_a_long_generation_within_5_s(
    tmp_path_factory: pytest.TempPathFactory, environment: EngineEnvironment
) -> None:
    """A model that writes 1000 frames (over a minute here) is stopped by the task's cancel: the
    worker is asked, then stopped, and the task ends cancelled within 5 s; the next one runs."""
    weights = tmp_path_factory.mktemp("moss-long")
    builder = [environment.python() or "", str(ROOT / "tests" / "moss_tiny.py"), str(weights)]
    subprocess.run(
        [*builder, "--frames", "1000", "--no-check", "--upstream", str(UPSTREAM)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        check=True,
        timeout=600,
    )
    studio = Studio(make_settings(tmp_path_factory.mktemp("moss-cancel"), weights_dir=weights))
    studio.start()
    engine = studio.registry.engine("moss-ttsd")
    try:
        task = studio.runner.submit("dialogue", "long", DialogueConfig(script=SCRIPT, engine="moss-ttsd"))
        deadline = time.monotonic() + 180
        while not (engine.worker is not None and engine.worker.busy) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.worker is not None and engine.worker.busy, "the generation never started"
        time.sleep(1.0)  # well inside the generation
        asked = time.monotonic()
        studio.runner.cancel(task.task_id)
        done = studio.runner.wait(task.task_id, timeout=30)
        assert done.status == TaskStatus.CANCELLED, (done.status, done.error_message)
        assert time.monotonic() - asked < 5.0
        assert not (engine.worker and engine.worker.busy)
    finally:
        studio.stop()
        engine.unload()


def _file(client: TestClient, task: dict[str, Any], name: str) -> Path:
    studio = client.app.state.studio
    path = studio.store.file_path(task["task_id"], name)
    assert path is not None, f"task has no {name}: {studio.store.files(task['task_id'])}"
    return path


@pytest.mark.slow
def test_the_dialogue_tab_speaks_a_script_with_moss_ttsd(
    browser, tiny: dict[str, Any], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """What a user does with MOSS-TTSD's weights in place: the Dialogue tab offers it as the engine,
    and Generate gives the one-pass track (FRAMES frames) with its subtitles."""
    from tests.conftest import UI_TIMEOUT_MS, LiveServer
    from tests.test_browser_dialogue import open_dialogue_tab, paste_script, wait_for_status
    from tests.test_browser_voices import download

    sync_api = pytest.importorskip("playwright.sync_api")
    (tmp_path / "live").mkdir()
    live = LiveServer(tmp_path / "live", env={"STUDIO_WEIGHTS_DIR": str(tiny["weights"])}).start()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(live.url + "/", wait_until="domcontentloaded")
        paste_script(open_dialogue_tab(page), SCRIPT)
        box = page.locator("#dialogue-engine input")
        box.click()
        page.get_by_role("option", name="MOSS-TTSD").click()
        sync_api.expect(box).to_have_value("MOSS-TTSD")
        page.locator("#dialogue-generate").click()
        wait_for_status(page, "Done", 600_000)  # ~30 s on 2 idle cores
        sync_api.expect(page.locator("#dialogue-status")).to_contain_text("4 turns")
        srt = page.locator("#dialogue-srt textarea")
        sync_api.expect(srt).to_have_value(re.compile(r"\[S3\] 大家好"))
        samples, rate = download(page, "dialogue-audio")
        assert rate == 24000 and len(samples) - tiny["expected_samples"] in (0, 1)
    finally:
        context.close()
        live.stop()


def test_a_jsonl_batch_line_with_prompt_clips_is_cloned_from_them(
    tiny: dict[str, Any], tmp_path: Path
) -> None:
    """MOSS-TTSD's own input format (prompt_audio_speakerN + prompt_text_speakerN, paths relative to
    the file): with MOSS-TTSD able to run, the batch speaks it in one pass from those clips."""
    from studio.batch import run_batch

    for n in (1, 2):
        sf.write(tmp_path / f"speaker{n}.wav", 0.1 * np.sin(np.arange(20000 * n) * 0.03 * n), 16000)
    line = {
        "text": "[S1]Good morning, how was the trip?[S2]Long, but worth it.[S1]Tell me everything.",
        "prompt_audio_speaker1": "speaker1.wav",
        "prompt_text_speaker1": "This is how the first speaker sounds.",
        "prompt_audio_speaker2": "speaker2.wav",
        "prompt_text_speaker2": "And this is the second speaker.",
    }
    unprompted = {"text": "[S1]No clips here.[S2]So each voice speaks its own turns."}
    jsonl = tmp_path / "batch.jsonl"
    jsonl.write_text(json.dumps(line) + "\n" + json.dumps(unprompted) + "\n", encoding="utf-8")
    studio = Studio(make_settings(tmp_path / "data", weights_dir=tiny["weights"]))
    try:
        first, second = run_batch(studio.dialogue, jsonl, tmp_path / "out")
        assert first.ok and second.ok, (first.error, second.error)
        audio, rate = sf.read(first.output)
        assert rate == 24000 and len(audio) - tiny["expected_samples"] in (0, 1)
        timing = json.loads((tmp_path / "out" / "line_0001" / "timing.json").read_text(encoding="utf-8"))
        assert [t["speaker"] for t in timing] == ["S1", "S2", "S1"] and {t["engine"] for t in timing} == {
            "moss-ttsd"
        }
        # The clips were the references: no voice had to say a reference line of its own.
        assert not (studio.settings.cache_dir / "references").exists()
        plain = json.loads((tmp_path / "out" / "line_0002" / "timing.json").read_text(encoding="utf-8"))
        assert "moss-ttsd" not in {t["engine"] for t in plain}  # no clips: turn by turn, as before
    finally:
        studio.registry.engine("moss-ttsd").unload()
