"""Engine environments: made for real from the package registries (a small spec), their states, the
CLI, the REST task and what an engine without one says."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engines.environment import (
    EngineEnvironment,
    EnvironmentState,
    InstallCancelled,
    studio_satisfies,
)
from engines.gpu import GpuAllocator
from engines.moss_ttsd import MossTtsdEngine

ROOT = Path(__file__).resolve().parent.parent


def small_spec(tmp_path: Path, text: str) -> Path:
    spec = tmp_path / "small.txt"
    spec.write_text(text, encoding="utf-8")
    return spec


def test_pins_the_studio_satisfies_need_no_environment(tmp_path: Path) -> None:
    environment = EngineEnvironment(
        "small", tmp_path / "envs", spec=small_spec(tmp_path, "numpy\npsutil>=1\n")
    )
    assert studio_satisfies(environment.pins)
    assert environment.state() is EnvironmentState.SHARED
    assert environment.python() == sys.executable
    assert environment.problem() is None


def test_a_missing_environment_says_how_to_install_it(tmp_path: Path) -> None:
    environment = EngineEnvironment("small", tmp_path / "envs", spec=small_spec(tmp_path, "numpy==1.0.0\n"))
    assert environment.state() is EnvironmentState.MISSING
    assert environment.python() is None
    problem = environment.problem() or ""
    assert "python -m studio.engines install small" in problem and str(tmp_path / "envs" / "small") in problem


def test_install_makes_a_working_environment_then_pins_changing_make_it_stale(tmp_path: Path) -> None:
    """A real venv from the registry: pip's lines and progress come out, the engine's imports are
    checked in it, and a worker's modules import there."""
    spec = small_spec(tmp_path, "# the worker protocol's needs\nnumpy\npsutil\n")
    unisolated = tmp_path / "small.no-build-isolation.txt"  # built against the venv's own setuptools
    unisolated.write_text("six\n", encoding="utf-8")
    environment = EngineEnvironment("small", tmp_path / "envs", imports=["numpy", "six"], spec=spec)
    assert environment.pins == ("numpy", "psutil", "six")
    lines: list[str] = []
    progress: list[tuple[float, str]] = []
    state = environment.install(on_line=lines.append, on_progress=lambda p, s: progress.append((p, s)))
    assert state is EnvironmentState.READY
    assert environment.python() == str(tmp_path / "envs" / "small" / "bin" / "python")
    assert any(line.startswith("$ ") and "-m venv" in line for line in lines)
    assert any("numpy" in line for line in lines if not line.startswith("$ "))
    assert any(line.startswith("$ ") and "--no-build-isolation --no-deps -r" in line for line in lines)
    percents = [p for p, _ in progress]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert [s for _, s in progress][-1] == "installed"
    out = subprocess.run(
        [environment.python() or "", "-c", "import engines.worker, sys; print(sys.prefix)"],
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(tmp_path / "envs" / "small")

    unisolated.write_text("six==1.16.0\n", encoding="utf-8")
    assert environment.state() is EnvironmentState.STALE
    assert "install it again" in (environment.problem() or "")


def test_an_environment_links_the_pinned_packages_another_one_has(tmp_path: Path) -> None:
    """The second of two environments pinning the same numpy hard-links it (and what it needs) from
    the first before pip runs, so pip finds it installed (the heavy engines' CUDA torch is 5-7 GB a
    copy); its scripts run on the second's own interpreter, and it still works."""
    first = EngineEnvironment(
        "first", tmp_path / "envs", imports=["numpy"], spec=small_spec(tmp_path, "numpy==2.2.6\npsutil\n")
    )
    spec = tmp_path / "second.txt"
    spec.write_text("numpy==2.2.6\npsutil\nsix\n", encoding="utf-8")  # psutil: not pinned, not linked
    second = EngineEnvironment("second", tmp_path / "envs", imports=["numpy", "six"], spec=spec)
    first.install(on_line=lambda line: None)
    lines: list[str] = []
    assert second.install(on_line=lines.append) is EnvironmentState.READY
    assert "linked 1 packages from the other environments: numpy" in lines
    assert any(line.startswith("Requirement already satisfied: numpy==2.2.6") for line in lines)

    def numpy_files(environment: EngineEnvironment) -> dict[str, int]:
        site = next(environment.folder.glob("lib/python*/site-packages"))
        found = [*site.glob("numpy/**/*"), *site.glob("numpy-2.2.6.dist-info/*")]
        return {str(path.relative_to(site)): path.stat().st_ino for path in found if path.is_file()}

    assert len(numpy_files(first)) > 500 and numpy_files(first) == numpy_files(second)
    script = second.folder / "bin" / "numpy-config"
    assert script.read_text().splitlines()[0] == f"#!{second.folder / 'bin' / 'python'}"
    assert (
        subprocess.run([script, "--version"], capture_output=True, text=True, check=True).stdout.strip()
        == "2.2.6"
    )
    subprocess.run([second.python() or "", "-c", "import numpy; numpy.ones(3).sum()"], check=True)


def test_cancel_stops_pip_and_leaves_it_unfinished(tmp_path: Path) -> None:
    environment = EngineEnvironment(
        "small", tmp_path / "envs", spec=small_spec(tmp_path, "numpy==1.0.0\nsix\n")
    )
    stop = threading.Event()

    def on_line(line: str) -> None:
        if line.startswith("$ ") and " -m pip " in line:
            stop.set()  # as pip starts

    with pytest.raises(InstallCancelled, match="cancelled at: installing the pinned packages"):
        environment.install(on_line=on_line, cancelled=stop)
    assert environment.state() is EnvironmentState.STALE  # a venv without the stamp: install again


def test_cli_refuses_an_engine_without_an_environment() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "studio.engines", "install", "kokoro"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "runs in the studio's own environment" in out.stderr and "moss-ttsd" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "studio.engines", "install", "nope"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 2 and "unknown engine 'nope'" in out.stderr


def test_moss_ttsd_declares_its_environment_by_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_ENGINE_ENVS", str(tmp_path / "envs"))
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    environment = engine.environment()
    assert environment is not None and environment.name == "moss-ttsd"
    assert {"torch", "torchaudio", "transformers"} <= set(environment.imports)
    assert "torch==2.9.1" in environment.pins and "transformers==5.0.0" in environment.pins
    (tmp_path / "MOSS-TTSD" / "MOSS-TTSD-v0.5").mkdir(parents=True)
    (tmp_path / "MOSS-TTSD" / "MOSS-TTSD-v0.5" / "config.json").write_text("{}")
    environment = engine.environment()
    assert environment is not None and environment.name == "moss-ttsd-v0.5"
    assert "transformers==4.53.2" in environment.pins


def test_rest_install_is_a_task_that_shows_pip_and_can_be_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from studio.server import create_app
    from tests.conftest import make_settings, wait_for_task

    monkeypatch.setenv("STUDIO_ENGINE_ENVS", str(tmp_path / "envs"))
    with TestClient(create_app(make_settings(tmp_path / "data"))) as client:
        assert client.post("/api/v1/engines/nope/install").status_code == 404
        conflict = client.post("/api/v1/engines/kokoro/install")
        assert conflict.status_code == 409 and "nothing to install" in conflict.json()["error"]["message"]

        task = client.post("/api/v1/engines/moss-ttsd/install").json()
        assert task["status"] in ("pending", "running")
        deadline = time.monotonic() + 120
        while "pip install" not in client.get(f"/api/v1/task/{task['task_id']}/logs").text:
            assert time.monotonic() < deadline, "pip never started"
            time.sleep(0.2)
        running = client.get(f"/api/v1/task/{task['task_id']}").json()
        assert running["progress"] > 0 and "installing torch==2.9.1" in running["current_step"]
        client.post(f"/api/v1/task/{task['task_id']}/cancel")
        done = wait_for_task(client, task["task_id"], timeout=60)
        assert done["status"] == "cancelled"
        engines = {e["name"]: e for e in client.get("/api/v1/engines").json()["engines"]}
        assert engines["moss-ttsd"]["environment_state"] == "stale"  # a venv without its stamp
        assert engines["moss-ttsd"]["state"] == "needs-environment"
