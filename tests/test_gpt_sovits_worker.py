"""GPT-SoVITS for real: the training wizard runs upstream's own scripts on tiny random-weight models
built with upstream's classes in the real layout (tests/gpt_sovits_tiny.py), on its own pinned
environment (installed here for real when it is not yet), and the voice it exports is spoken by
upstream's TTS_infer_pack in the engine's worker, through the OpenAI route.

Random weights do not speak: the checks are upstream's real intermediate files (2-name2text.txt,
4-cnhubert/, 5-wav32k/, 6-name2semantic.tsv), the trainers' checkpoints, and audio of plausible
length (GPT-SoVITS's GPT writes 25 semantic tokens a second until its end token, at most its
max_sec; the tiny GPT, trained one epoch, stops on its own).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from engines.environment import EngineEnvironment
from engines.gpt_sovits import CODE, NLTK_DATA, GptSovitsEngine
from engines.gpu import GpuAllocator
from tests.conftest import make_settings
from tests.engine_checks import ready
from tests.test_training_piper import dataset_zip

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream" / "GPT-SoVITS"
SENTENCES = (
    "The cat sat on the warm mat by the door.",
    "Please close the window before you leave.",
    "We walked to the old harbour this morning.",
    "My brother plays the piano every evening.",
    "The river runs quietly past the green fields.",
)  # 11 s of speech: the training preflight asks for 10
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (UPSTREAM / "GPT_SoVITS" / "s2_train.py").is_file(),
        reason=f"GPT-SoVITS's upstream code is not at {UPSTREAM}",
    ),
]


@pytest.fixture(scope="module")
def environment() -> EngineEnvironment:
    """gpt-sovits's environment, installed from the registries unless it is ready (reused after)."""
    return ready(GptSovitsEngine(ROOT / "weights", GpuAllocator([])).environment())


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, environment: EngineEnvironment) -> Path:
    """A writable copy of upstream's code with the tiny models inside, as weights/GPT-SoVITS/code."""
    weights = tmp_path_factory.mktemp("gpt-sovits-weights")
    code = weights / CODE
    builder = [environment.python() or "", str(ROOT / "tests" / "gpt_sovits_tiny.py"), str(code)]
    out = subprocess.run(
        [*builder, "--upstream", str(UPSTREAM), "--code"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    shutil.move(code / "nltk_data", weights / NLTK_DATA)  # where the adapter points NLTK_DATA
    return weights


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[TestClient]:
    from studio.server import create_app

    app = create_app(make_settings(tmp_path_factory.mktemp("gpt-sovits-studio"), weights_dir=weights))
    with TestClient(app) as client:
        yield client


def run_step(client: TestClient, task_id: str, step: str, timeout: float = 900, **params: Any) -> dict:
    base = f"/api/v1/task/{task_id}"
    queued = client.post(f"{base}/step/{step}", json={"params": params})
    assert queued.status_code == 200, queued.text
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(base).json()
        if task["steps"][step] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, client.get(f"{base}/logs").text[-3000:]
        time.sleep(0.5)
    assert task["steps"][step] == "done", (
        step,
        task["error_message"],
        client.get(f"{base}/logs").text[-4000:],
    )
    return task


def test_the_wizard_trains_a_gpt_sovits_voice_that_every_route_speaks(
    client: TestClient, tmp_path: Path
) -> None:
    engines = {e["name"]: e for e in client.get("/api/v1/engines").json()["engines"]}
    assert engines["gpt_sovits"]["state"] == "ready", engines["gpt_sovits"]["missing"]
    config = {"kind": "training", "backend": "gpt_sovits", "voice_name": "gsv_joe", "language": "en"}
    created = client.post("/api/v1/task/create", json={"task_name": "gsv_joe", "config": config})
    assert created.status_code == 200, created.text
    task_id = created.json()["task_id"]
    imported = client.post(
        f"/api/v1/training/{task_id}/dataset/import",
        files={"file": ("joe.zip", dataset_zip(tmp_path / "joe", SENTENCES))},
    )
    assert imported.status_code == 200 and imported.json()["clips"] == len(SENTENCES), imported.text

    folder = client.app.state.studio.store.folder(task_id)  # type: ignore[attr-defined]
    exp = folder / "_work" / "gpt_sovits"
    run_step(client, task_id, "extract_text_features")
    names = (exp / "2-name2text.txt").read_text(encoding="utf-8").splitlines()
    assert len(names) == len(SENTENCES) and all(len(line.split("\t")) == 4 for line in names)
    run_step(client, task_id, "extract_audio_features")
    assert len(list((exp / "4-cnhubert").glob("*.pt"))) == len(SENTENCES)
    assert len(list((exp / "5-wav32k").glob("*.wav"))) == len(SENTENCES)
    run_step(client, task_id, "extract_semantic_features")
    semantic = (exp / "6-name2semantic.tsv").read_text(encoding="utf-8").splitlines()
    assert semantic[0] == "item_name\tsemantic_audio" and len(semantic) == 1 + len(SENTENCES)

    run_step(client, task_id, "train_sovits", sovits_epochs=1, batch_size=20, segment_size=1280)
    assert list((folder / "train" / "SoVITS_weights").glob("*.pth"))
    run_step(client, task_id, "train_gpt", gpt_epochs=1, batch_size=4)
    assert list((folder / "train" / "GPT_weights").glob("*.ckpt"))
    task = run_step(client, task_id, "export_voice")
    exported = task["result"]["steps"]["export_voice"]
    assert exported["voice_id"] == "gsv_joe" and exported["engine"] == "gpt_sovits"
    assert 3.0 <= exported["reference_seconds"] <= 10.0

    voices = {v["id"]: v for v in client.get("/api/v1/voices").json()["voices"]}
    assert voices["gsv_joe"]["engine"] == "gpt_sovits"
    response = client.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": "Hello there, this is a test.",
            "voice": "gsv_joe",
            "response_format": "flac",
        },
    )
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 32000 and np.isfinite(audio).all()
    assert 0.2 <= len(audio) / rate <= 60, len(audio) / rate
    engine = client.app.state.studio.registry.engine("gpt_sovits")  # type: ignore[attr-defined]
    assert engine.worker is not None and engine.worker.alive
    meta = json.loads((engine.voices_dir / "gsv_joe" / "voice.json").read_text(encoding="utf-8"))
    assert meta["language"] == "en" and meta["reference_text"]
