"""Checks on what a GPU engine reports while its code and weights are missing, shared by the tests of
the engines that clone a repository and download checkpoints (MegaTTS3, MOSS-TTSD), and the engine
environments those tests run upstream's code in."""

from __future__ import annotations

from engines.environment import EngineEnvironment, EnvironmentState


def ready(environment: EngineEnvironment | None) -> EngineEnvironment:
    """The environment, installed from the registries unless it is ready (then reused: minutes once)."""
    assert environment is not None
    if environment.state() is not EnvironmentState.READY:
        environment.install(on_line=lambda line: None)
    assert environment.state() is EnvironmentState.READY
    return environment
