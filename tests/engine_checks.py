"""Checks on what a GPU engine reports while its code and weights are missing, shared by the tests of
the engines that clone a repository and download checkpoints (MegaTTS3, MOSS-TTSD), and the engine
environments those tests run upstream's code in."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

import pytest

from engines.base import Engine, EngineState, EngineUnavailable
from engines.environment import EngineEnvironment, EnvironmentState


def ready(environment: EngineEnvironment | None) -> EngineEnvironment:
    """The environment, installed from the registries unless it is ready (then reused: minutes once)."""
    assert environment is not None
    if environment.state() is not EnvironmentState.READY:
        environment.install(on_line=lambda line: None)
    assert environment.state() is EnvironmentState.READY
    return environment


def check_gpu_first_then_every_path(engine: Engine, weights: Path, paths: Iterable[str]) -> tuple[str, ...]:
    """Without a GPU, the status is NEEDS_GPU (nothing else matters without one) and it names every
    path under `weights`; returns what it says is missing."""
    status = engine.status()
    assert status.state == EngineState.NEEDS_GPU
    assert any("needs a CUDA GPU" in text for text in status.missing)
    for relative in paths:
        assert any(str(weights / relative) in text for text in status.missing), relative
    return status.missing


def check_packages_then_weights_are_missing(engine: Engine, weights: Path, paths: Iterable[str]) -> None:
    """With a GPU, the status names each absent package (its state first) and every path under
    `weights`, and not the GPU."""
    status = engine.status()
    packages = [r.target for r in engine.info.requirements if r.kind == "package"]
    absent = [name for name in packages if importlib.util.find_spec(name) is None]
    assert status.state == (EngineState.MISSING_PACKAGE if absent else EngineState.NEEDS_WEIGHTS)
    assert not any("GPU" in text for text in status.missing)
    for name in absent:
        assert any(f"'{name}'" in text for text in status.missing), name
    for relative in paths:
        assert any(str(weights / relative) in text for text in status.missing), relative


def check_loading_says_what_is_missing(
    engine: Engine, name: str, weights: Path, paths: Iterable[str]
) -> None:
    """Without a GPU, loading is refused with `name`, the GPU and every path under `weights`; nothing is
    loaded or leased."""
    with pytest.raises(EngineUnavailable) as raised:
        engine.ensure_loaded()
    message = str(raised.value)
    assert message.startswith(f"{name}: ")
    assert "needs a CUDA GPU" in message
    for relative in paths:
        assert str(weights / relative) in message
    assert not engine.is_loaded
    assert engine.allocator.leases() == []
