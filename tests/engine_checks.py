"""Checks on what a GPU engine reports while its code and weights are missing, shared by the tests of
the engines that clone a repository and download checkpoints (MegaTTS3, MOSS-TTSD), and the engine
environments those tests run upstream's code in."""

from __future__ import annotations

import time

from engines.environment import EngineEnvironment, EnvironmentState, InstallBusy

INSTALL_WAIT_S = 1800  # another test process may be installing it (./test.sh runs two)


def ready(environment: EngineEnvironment | None) -> EngineEnvironment:
    """The environment, installed from the registries unless it is ready (then reused: minutes once)."""
    assert environment is not None
    deadline = time.monotonic() + INSTALL_WAIT_S
    while environment.state() is not EnvironmentState.READY:
        try:
            environment.install(on_line=lambda line: None)
        except InstallBusy:
            assert time.monotonic() < deadline, f"{environment.name} was being installed for too long"
            time.sleep(5)
    assert environment.state() is EnvironmentState.READY
    return environment
