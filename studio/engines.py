"""`python -m studio.engines`: the engines' states, and installing a heavy engine's own environment.

    python -m studio.engines list                 every engine: state, environment, what it needs
    python -m studio.engines install moss-ttsd    make (or update) moss-ttsd's pinned environment
        [--if-needed]                             (only where it is not ready yet)

Settings come from the same `STUDIO_*` variables and studio.yaml as the server (the weights folder
decides which MOSS-TTSD version's environment is meant); environments go to `STUDIO_ENGINE_ENVS`
(default `envs/`). Installing prints pip's output and the progress, and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import sys

from engines.environment import InstallError
from engines.gpu import GpuAllocator
from studio.config import Settings
from studio.core import build_registry
from studio.errors import StudioError
from studio.services.environments import EnvironmentService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.engines", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every engine's state and what it still needs")
    install = commands.add_parser("install", help="make an engine's own pinned environment")
    install.add_argument("engine", help="e.g. moss-ttsd")
    install.add_argument(
        "--if-needed", action="store_true", help="do nothing when the environment is ready already"
    )
    args = parser.parse_args(argv)

    registry = build_registry(Settings(), GpuAllocator())
    if args.command == "list":
        for report in registry.reports():
            environment = (
                f" (environment {report.environment}: {report.environment_state})"
                if report.environment
                else ""
            )
            print(f"{report.name}: {report.state}{environment}")
            for missing in report.missing:
                print(f"  - {missing}")
        return 0
    try:
        environment = EnvironmentService(registry).environment(args.engine)
        if args.if_needed and environment.python() is not None:
            print(f"environment '{environment.name}' is {environment.state().value}: {environment.folder}")
            return 0
        state = environment.install(
            on_line=print, on_progress=lambda percent, step: print(f"[{percent:5.1f}%] {step}", flush=True)
        )
    except StudioError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"environment '{environment.name}' is {state.value}: {environment.folder}")
    for missing in registry.engine(args.engine).status().missing:
        print(f"  still needed: {missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
