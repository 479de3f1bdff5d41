"""Engine environments as tasks: install a heavy engine's pinned environment with progress, log and cancel.

The Engines tab's Install button, `POST /api/v1/engines/{name}/install` and `python -m studio.engines
install <engine>` all end here. The work itself is `engines.environment.EngineEnvironment.install`;
this service checks the request against the registry and runs it as an "engine_install" task.
"""

from __future__ import annotations

from typing import Any

from engines.environment import EngineEnvironment, InstallCancelled, InstallError
from engines.registry import EngineRegistry
from studio.errors import Conflict, NotFound, StudioError
from studio.tasks.configs import TaskConfig
from studio.tasks.records import Task
from studio.tasks.runner import TaskCancelled, TaskContext, TaskFailed, TaskKind, TaskRunner


class EngineInstallConfig(TaskConfig):
    """An "engine_install" task: the engine whose environment to make."""

    engine: str


class EnvironmentService:
    """Finds an engine's environment and installs it (as a task, or directly for the CLI)."""

    def __init__(self, registry: EngineRegistry, runner: TaskRunner | None = None) -> None:
        self.registry = registry
        self.runner = runner

    def engines(self) -> list[str]:
        """The engines that have an environment of their own."""
        return [name for name in self.registry.names() if self.registry.engine(name).environment()]

    def submit(self, engine_name: str, owner: str) -> Task:
        """Start installing `engine_name`'s environment as an "engine_install" task."""
        assert self.runner is not None, "built without a task runner"
        return self.runner.submit("engine_install", f"install {engine_name}", {"engine": engine_name}, owner)

    def environment(self, engine_name: str) -> EngineEnvironment:
        """The environment `engine_name` runs in; NotFound for no such engine, Conflict when it needs none."""
        try:
            engine = self.registry.engine(engine_name)
        except KeyError as error:
            raise NotFound(str(error.args[0]), "unknown_engine") from None
        environment = engine.environment()
        if environment is None:
            with_own = [name for name in self.registry.names() if self.registry.engine(name).info.environment]
            raise Conflict(
                f"engine '{engine_name}' runs in the studio's own environment: nothing to install; "
                f"engines with an environment of their own: {', '.join(with_own) or 'none'}",
                "no_environment",
            )
        return environment

    def prepare_task(self, config: EngineInstallConfig) -> EngineInstallConfig:
        self.environment(config.engine)
        return config

    def task_kind(self) -> TaskKind:
        return TaskKind(
            "engine_install", self._run_task, config=EngineInstallConfig, prepare=self.prepare_task
        )

    def _run_task(self, context: TaskContext) -> dict[str, Any]:
        config: EngineInstallConfig = context.request
        try:
            environment = self.environment(config.engine)
        except StudioError as error:
            raise TaskFailed(error.message) from None
        try:
            state = environment.install(
                on_line=context.log,
                on_progress=lambda percent, step: context.progress(percent, step),
                cancelled=lambda: context.cancelled,
            )
        except InstallCancelled as error:
            raise TaskCancelled(str(error)) from None
        except InstallError as error:
            raise TaskFailed(str(error)) from None
        status = self.registry.engine(config.engine).status()
        return {
            "engine": config.engine,
            "environment": environment.name,
            "state": state.value,
            "folder": str(environment.folder),
            "engine_state": status.state.value,
            "still_missing": list(status.missing),
        }
