"""Hugging Face Space support: detection, the shared-use preset and its caps, ZeroGPU durations,
and the Space entry (`python app.py` with the Space's environment variables) serving."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.server import free_port
from studio.config import Settings
from studio.services.cloning import CloningService, clone_gpu_seconds
from studio.services.dialogue import DialogueService, PlannedTurn, whole_script_gpu_seconds
from studio.services.script import parse_script
from studio.space import (
    GPU_DURATION_RANGE,
    gpu_duration,
    on_zero_gpu,
    running_on_space,
    space_data_dir,
    space_settings,
)
from tests.conftest import ROOT, make_settings

SPACE_ENV = ("SPACE_ID", "SYSTEM", "PORT", "GRADIO_SERVER_PORT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Space variables, no STUDIO_* settings, no studio.yaml: only what a test sets."""
    for name in [*SPACE_ENV, *(k for k in os.environ if k.startswith("STUDIO_"))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


# ---- detection and preset -------------------------------------------------------------------------
def test_detects_a_space_by_its_environment(clean_env: pytest.MonkeyPatch) -> None:
    assert not running_on_space()
    clean_env.setenv("SYSTEM", "spaces")
    assert running_on_space()
    clean_env.delenv("SYSTEM")
    clean_env.setenv("SPACE_ID", "someone/speech-studio")
    assert running_on_space()


def test_preset_binds_all_interfaces_on_the_space_port(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "no-volume"
    assert space_settings(Settings(), root).port == 7860
    clean_env.setenv("GRADIO_SERVER_PORT", "7861")
    assert space_settings(Settings(), root).port == 7861
    clean_env.setenv("PORT", "8123")  # PORT first
    settings = space_settings(Settings(), root)
    assert (settings.host, settings.port) == ("0.0.0.0", 8123)


def test_preset_caps_requests_and_keeps_the_rate_limit(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    normal = Settings()
    assert normal.allow_thorough_fit and normal.max_dialogue_turns == 0
    settings = space_settings(normal, tmp_path / "no-volume")
    assert settings.max_text_chars == 2000
    assert (settings.max_dialogue_chars, settings.max_dialogue_turns) == (6000, 40)
    assert not settings.allow_thorough_fit
    assert settings.rate_limit_per_minute == normal.rate_limit_per_minute > 0
    note = settings.space_note
    assert "2,000 characters" in note and "40 turns / 6,000 characters" in note
    assert "no thorough fitting" in note and "temporary" in note


def test_persistent_storage_is_used_when_attached(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    volume = tmp_path / "data"  # stands in for the Space's /data
    volume.mkdir()
    with caplog.at_level(logging.INFO, logger="studio.space"):
        settings = space_settings(Settings(), volume)
    assert settings.data_dir == volume / "studio"
    assert "persistent storage" in settings.space_note
    assert "persistent storage" in caplog.text and str(volume / "studio") in caplog.text


def test_temporary_storage_without_a_writable_volume(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import tempfile

    temp = Path(tempfile.gettempdir()) / "speech-studio"
    assert space_data_dir(tmp_path / "missing") == (temp, False)
    (tmp_path / "a-file").write_text("not a folder")
    assert space_data_dir(tmp_path / "a-file") == (temp, False)
    (tmp_path / "read-only").mkdir()
    clean_env.setattr(os, "access", lambda *_: False)
    assert space_data_dir(tmp_path / "read-only") == (temp, False)
    with caplog.at_level(logging.INFO, logger="studio.space"):
        settings = space_settings(Settings(), tmp_path / "read-only")
    assert settings.data_dir == temp
    assert "temporary" in caplog.text and "lost when the Space restarts" in settings.space_note


def test_explicit_settings_win_over_the_preset(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("PORT", "8123")
    clean_env.setenv("STUDIO_PORT", "9000")
    clean_env.setenv("STUDIO_MAX_TEXT_CHARS", "5000")
    clean_env.setenv("STUDIO_ALLOW_THOROUGH_FIT", "true")
    clean_env.setenv("STUDIO_DATA_DIR", str(tmp_path / "mine"))
    volume = tmp_path / "data"
    volume.mkdir()
    settings = space_settings(Settings(host="127.0.0.1"), volume)  # host as from --host
    assert (settings.host, settings.port, settings.max_text_chars) == ("127.0.0.1", 9000, 5000)
    assert settings.allow_thorough_fit and settings.data_dir == tmp_path / "mine"
    assert settings.max_dialogue_turns == 40  # not given: the preset's
    assert "5,000 characters" in settings.space_note and "temporary" in settings.space_note


def test_dialogue_limit_defaults_to_ten_texts(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(max_text_chars=300)
    assert settings.max_dialogue_chars == 0
    service = DialogueService(types.SimpleNamespace(max_text_chars=300), settings.max_dialogue_chars)  # type: ignore[arg-type]
    assert service.max_chars == 3000 and service.max_turns == 0


# ---- caps over HTTP, with the Space's settings -------------------------------------------------------
@pytest.fixture(scope="module")
def space_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from studio.server import create_app

    folder = tmp_path_factory.mktemp("space")
    settings = space_settings(make_settings(folder / "studio"), folder / "data")
    with TestClient(create_app(settings)) as client:
        yield client


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_speech_over_the_space_limit_is_413(space_client: TestClient) -> None:
    response = space_client.post("/v1/audio/speech", json={"input": "a" * 2001, "voice": "alloy"})
    assert response.status_code == 413 and error_code(response) == "text_too_long"
    assert "2000" in response.json()["error"]["message"]
    response = space_client.post("/api/v1/tts/synthesize", json={"text": "b " * 1001, "voice_id": "joe"})
    assert response.status_code == 413


def test_dialogue_over_the_space_limits_is_413(space_client: TestClient) -> None:
    too_many = "\n".join(f"[S{1 + i % 2}] Line number {i}." for i in range(41))
    response = space_client.post("/api/v1/dialogue", json={"script": too_many})
    assert response.status_code == 413 and error_code(response) == "too_many_turns"
    assert "41 turns" in response.json()["error"]["message"]
    too_long = "\n".join(f"[S{1 + i % 2}] " + "word " * 200 for i in range(7))
    response = space_client.post("/api/v1/dialogue", json={"script": too_long})
    assert response.status_code == 413 and error_code(response) == "script_too_long"
    within = "\n".join(f"[S{1 + i % 2}] Line number {i}." for i in range(40))
    studio = space_client.app.state.studio  # type: ignore[attr-defined]
    _, planned = studio.dialogue.plan(studio_request(within))
    assert len(planned) == 40


def studio_request(script: str):  # type: ignore[no-untyped-def]
    from studio.services.dialogue import DialogueConfig

    return DialogueConfig(script=script)


def test_thorough_fitting_is_refused(space_client: TestClient) -> None:
    response = space_client.post(
        "/api/v1/voices/upload",
        files={"voice_file": ("me.wav", b"RIFF....", "audio/wav")},
        data={"voice_id": "thorough-one", "fit": "thorough"},
    )
    assert response.status_code == 422 and error_code(response) == "thorough_fit_disabled"
    assert "quick" in response.json()["error"]["message"]
    assert space_client.get("/api/v1/voices/thorough-one").status_code == 404  # nothing was stored
    response = space_client.post("/api/v1/voices/anyone/fit", json={"mode": "thorough"})
    assert response.status_code == 422 and error_code(response) == "thorough_fit_disabled"
    response = space_client.post("/api/v1/voices/anyone/fit", json={})  # thorough is the default mode
    assert response.status_code == 422
    # The UI's path goes through the cloning service: refused there too.
    from studio.errors import BadInput

    cloning: CloningService = space_client.app.state.studio.cloning  # type: ignore[attr-defined]
    with pytest.raises(BadInput, match="thorough"):
        cloning.fit_voice("anyone", "thorough")


# ---- ZeroGPU ---------------------------------------------------------------------------------------
@pytest.fixture
def fake_spaces(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A stand-in for the Space runtime's `spaces` package: GPU(duration=...) records each duration."""
    asked: list[int] = []

    def gpu(duration):  # type: ignore[no-untyped-def]
        def decorate(fn):  # type: ignore[no-untyped-def]
            @functools.wraps(fn)
            def on_gpu(*args, **kwargs):  # type: ignore[no-untyped-def]
                asked.append(duration(*args, **kwargs) if callable(duration) else duration)
                return fn(*args, **kwargs)

            on_gpu.zero_gpu = True  # type: ignore[attr-defined]
            return on_gpu

        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    return asked


def test_gpu_duration_grows_with_the_request_within_bounds() -> None:
    low, high = GPU_DURATION_RANGE
    for kind in ("dialogue", "clone"):
        short, longer = gpu_duration(kind, 100), gpu_duration(kind, 2000)
        assert low <= short < longer <= high
        assert gpu_duration(kind, 10**7) == high and gpu_duration(kind, 0) >= low
    with pytest.raises(ValueError, match="unknown"):
        gpu_duration("painting", 10)


def test_zero_gpu_wrapper_asks_for_a_duration_derived_from_the_request(fake_spaces: list[int]) -> None:
    def clone(text: str) -> str:
        return text.upper()

    wrapped = on_zero_gpu(clone_gpu_seconds)(clone)
    assert wrapped is not clone and wrapped.zero_gpu  # type: ignore[attr-defined]
    assert wrapped("hi") == "HI"
    wrapped("a much longer text " * 50)
    assert fake_spaces == [clone_gpu_seconds("hi"), clone_gpu_seconds("a much longer text " * 50)]
    assert fake_spaces[0] < fake_spaces[1]

    script = parse_script("\n".join(f"[S{1 + i % 2}] Turn {i} of a long talk." for i in range(30)))
    planned = [PlannedTurn(i, t, "default", "moss-ttsd", 1.0, 0.0) for i, t in enumerate(script.turns)]
    render = on_zero_gpu(lambda self, planned, turns_dir: whole_script_gpu_seconds(planned))(
        lambda self, planned, turns_dir: len(planned)
    )
    assert render(None, planned[:2], Path(".")) == 2 and render(None, planned, Path(".")) == 30
    assert fake_spaces[2] < fake_spaces[3] == gpu_duration("dialogue", sum(len(p.turn.text) for p in planned))


def test_without_spaces_the_function_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError

    def work(text: str) -> str:
        return text

    assert on_zero_gpu(clone_gpu_seconds)(work) is work
    # Here (no `spaces` installed) the GPU entry points are the plain methods.
    assert not hasattr(DialogueService._render_whole_script, "__wrapped__")
    assert not hasattr(CloningService._clone, "__wrapped__")


# ---- the Space entry ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_space_entry_starts_with_the_space_environment(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_") and k not in SPACE_ENV}
    env |= {
        "SPACE_ID": "test/speech-studio",
        "SYSTEM": "spaces",
        "PORT": str(port),
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "STUDIO_DATA_DIR": str(tmp_path / "data"),  # not /tmp: the test keeps to its own folder
        "STUDIO_LOG_FORMAT": "text",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"server exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no /health in time: {log_path.read_text()[-2000:]}"
            try:
                health = httpx.get(url + "/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert health.json()["status"] == "healthy"
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200
        assert "space-note" in page.text and "Shared Space" in page.text and "2,000 characters" in page.text
        speech = httpx.post(
            url + "/v1/audio/speech",
            json={
                "model": "tts-1",
                "input": "Hello from the Space.",
                "voice": "alloy",
                "response_format": "wav",
            },
            timeout=120,
        )
        assert speech.status_code == 200, speech.text
        assert speech.content[:4] == b"RIFF" and len(speech.content) > 10_000
        too_long = httpx.post(
            url + "/v1/audio/speech", json={"input": "a" * 2001, "voice": "alloy"}, timeout=30
        )
        assert too_long.status_code == 413
        assert "Hugging Face Space preset" in log_path.read_text()
        assert (tmp_path / "data" / "tasks").exists()  # the data went where STUDIO_DATA_DIR says
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
