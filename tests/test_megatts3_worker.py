"""MegaTTS3 for real: upstream's unmodified `MegaTTS3DiTInfer` on random weights in the hub's layout
(tests/megatts3_tiny.py), run by the adapter's own code in its worker, on its own pinned environment
(installed here for real when it is not yet).

The fixture's weights make the length of what upstream writes independent of the text and the seed
(hand-set g2p, aligner and duration model: see tests/megatts3_tiny.py), so what upstream really did is
checked by length: for the builder's 1 s reference, 35 latent frames of 960 samples per chunk of text.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from engines.environment import EngineEnvironment
from engines.gpu import GpuAllocator
from engines.megatts3 import STEPS_ENV, MegaTts3Engine
from tests.conftest import make_settings
from tests.engine_checks import ready

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream" / "MegaTTS3"
SAMPLES_PER_CHUNK = 33600  # the 1 s reference: ((152 + 88) / 4 - 25) latent frames x 960 (megatts3_tiny.py)
pytestmark = pytest.mark.skipif(
    not (UPSTREAM / "tts" / "infer_cli.py").is_file(), reason=f"MegaTTS3's upstream code is not at {UPSTREAM}"
)


@pytest.fixture(scope="module")
def environment() -> EngineEnvironment:
    """megatts3's environment, installed from the registries unless it is ready (reused after)."""
    return ready(MegaTts3Engine(ROOT / "weights", GpuAllocator([])).environment())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, environment: EngineEnvironment) -> dict[str, Any]:
    weights = tmp_path_factory.mktemp("megatts3-weights")
    builder = [environment.python() or "", str(ROOT / "tests" / "megatts3_tiny.py"), str(weights)]
    out = subprocess.run(
        [*builder, "--upstream", str(UPSTREAM)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"weights": weights}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny: dict[str, Any]) -> Iterator[TestClient]:
    from studio.server import create_app

    app = create_app(make_settings(tmp_path_factory.mktemp("megatts3-studio"), weights_dir=tiny["weights"]))
    with pytest.MonkeyPatch.context() as patch, TestClient(app) as client:
        patch.setenv(STEPS_ENV, "1")  # 1 diffusion step, not 32: the length does not depend on them
        yield client


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return audio, rate


def clone_file(client: TestClient, text: str, wav: Path, npy: Path) -> Any:
    return client.post(
        "/api/v1/tts/synthesize_file",
        data={"text": text},
        files={
            "voice_file": (wav.name, wav.read_bytes(), "audio/wav"),
            "voice_latent": (npy.name, npy.read_bytes(), "application/octet-stream"),
        },
    )


@pytest.mark.slow
def test_the_tiny_weights_make_megatts3_usable(client: TestClient) -> None:
    engines = {e["name"]: e for e in client.get("/api/v1/engines").json()["engines"]}
    megatts3 = engines["megatts3"]
    assert megatts3["state"] == "ready", megatts3["missing"]
    assert megatts3["environment"] == "megatts3" and megatts3["environment_state"] == "ready"


@pytest.mark.slow
def test_a_clip_and_its_latent_are_cloned_in_english_and_chinese_in_its_worker(
    client: TestClient, tiny: dict[str, Any], environment: EngineEnvironment
) -> None:
    wav, npy = Path(tiny["reference_wav"]), Path(tiny["reference_npy"])
    for text in ("Hello there, this is a test.", "你好，这是一个测试。"):
        response = clone_file(client, text, wav, npy)
        assert response.status_code == 200, response.text
        assert response.headers["X-Engine"] == "megatts3"
        assert response.headers["X-Clone-Method"] == "zero-shot"
        audio, rate = decoded(response.content)
        assert rate == 24000 and len(audio) == SAMPLES_PER_CHUNK, (text, len(audio))
        assert np.isfinite(audio).all() and float(np.sqrt(np.mean(audio**2))) > 1e-3  # loudness-matched

    engine = client.app.state.studio.registry.engine("megatts3")  # type: ignore[attr-defined]
    assert engine.worker is not None and engine.worker.alive and engine.worker.pid != os.getpid()
    assert engine.worker.python == environment.python() != sys.executable
    assert engine.worker.load_result["device"] == "cpu"


@pytest.mark.slow
def test_a_library_voice_with_a_latent_is_spoken_by_megatts3_from_its_clip(
    client: TestClient, tmp_path: Path
) -> None:
    """A 4 s clip kept with its latent: every route speaks it through MegaTTS3 from the clip as sent,
    exactly as long as the same clip and latent cloned directly (the trimmed reference would differ)."""
    rate = 24000
    t = np.arange(4 * rate) / rate
    clip = (0.3 * np.sin(2 * np.pi * (150 + 60 * np.sin(2 * np.pi * 0.5 * t)) * t)).astype(np.float32)
    clip[: rate // 2] = 0.0  # half a second of silence the library trims from its own reference.wav
    wav, npy = tmp_path / "anna.wav", tmp_path / "anna.npy"
    sf.write(wav, clip, rate, subtype="PCM_16")
    np.save(npy, np.random.default_rng(0).standard_normal((1, 100, 32)).astype(np.float32))
    created = client.post(
        "/api/v1/voices/upload",
        data={"voice_id": "anna", "fit": "none", "language": "en"},
        files={
            "voice_file": ("anna.wav", wav.read_bytes(), "audio/wav"),
            "voice_latent": ("anna.npy", npy.read_bytes(), "application/octet-stream"),
        },
    )
    assert created.status_code == 200, created.text
    assert created.json()["has_latent"] is True

    direct = clone_file(client, "Good morning to you.", wav, npy)
    assert direct.status_code == 200, direct.text
    expected = len(decoded(direct.content)[0])
    # The OpenAI route speaks through the same speech service as /api/v1/tts/synthesize and the tabs.
    openai = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Good morning to you.", "voice": "anna", "response_format": "flac"},
    )
    assert openai.status_code == 200, openai.text
    audio, got_rate = decoded(openai.content)
    assert got_rate == rate and len(audio) == expected
