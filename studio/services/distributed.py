"""The "preflight" task: checks, in seconds, that this machine can run sharded multi-process video jobs.

It leases the devices for the task (every GPU it uses, exclusively; the CPU where there is none),
runs `engines.distributed.preflight` on them through the torchrun launcher, streams every rank's
output into the task log, turns the job's steps into progress, and ends the task with the job's
result (world size, backend, FSDP2 and Ulysses differences, seconds) or with the real reason it
failed: the failing rank's error, or "no progress for N s" when a rank hung. A cancel stops every
process of the job. The task runner releases the lease however the task ended.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from engines.distributed.preflight import HEADS, PREFLIGHT_MEMORY_MB, PreflightResult, run_preflight
from engines.gpu import AllocationError, GpuAllocator
from engines.launcher import MAX_CPU_PROCS, LaunchCancelled, LaunchError, TorchrunLauncher
from studio.errors import BadInput
from studio.tasks.runner import TaskCancelled, TaskContext, TaskFailed, TaskKind

DEFAULT_WATCHDOG_S = 120.0  # the tiny job prints every few seconds; two minutes of silence is a hang
_STEP = re.compile(r"^\[rank 0\] preflight step (\d+)/(\d+): (.*)$")


@dataclass(frozen=True)
class PreflightConfig:
    """A preflight task's settings: ranks, watchdog, and the optional rank to crash or hang (a drill)."""

    nproc: int = 2
    watchdog_s: float = DEFAULT_WATCHDOG_S
    crash_rank: int | None = None
    hang_rank: int | None = None


class DistributedService:
    """Runs the distributed preflight as a task on devices leased from the allocator."""

    def __init__(self, allocator: GpuAllocator, grace_s: float = 10.0) -> None:
        self.allocator = allocator
        self.grace_s = grace_s  # SIGTERM -> SIGKILL wait when a job is stopped

    def check_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The task's config, checked when the task is created: BadInput says what to fix."""
        return config | asdict(self.settings(config))

    def settings(self, config: dict[str, Any]) -> PreflightConfig:
        """The task's settings from its config, with defaults; BadInput says what to fix."""
        most = len(self.allocator.devices) or MAX_CPU_PROCS
        where = "GPUs on this machine" if self.allocator.devices else "CPU processes allowed (no GPU)"
        nproc = _whole(config.get("nproc", 2), "nproc")
        if not 1 <= nproc <= most:
            raise BadInput(f"nproc must be between 1 and {most} ({most} {where}); got {nproc}", "bad_nproc")
        if HEADS % nproc:
            fits = [n for n in range(1, most + 1) if HEADS % n == 0]
            raise BadInput(
                f"nproc must divide the preflight model's {HEADS} attention heads (Ulysses gives each rank "
                f"whole heads): {', '.join(map(str, fits))}; got {nproc}",
                "bad_nproc",
            )
        watchdog = config.get("watchdog_s", DEFAULT_WATCHDOG_S)
        if isinstance(watchdog, bool) or not isinstance(watchdog, int | float) or not 1 <= watchdog <= 3600:
            raise BadInput(f"watchdog_s must be a number of seconds from 1 to 3600; got {watchdog!r}")
        ranks: dict[str, int | None] = {}
        for key in ("crash_rank", "hang_rank"):
            value = config.get(key)
            rank = None if value is None else _whole(value, key)
            if rank is not None and not 0 <= rank < nproc:
                raise BadInput(f"{key} must be a rank from 0 to {nproc - 1}; got {value}")
            ranks[key] = rank
        return PreflightConfig(nproc, float(watchdog), ranks["crash_rank"], ranks["hang_rank"])

    def task_kind(self) -> TaskKind:
        return TaskKind("preflight", self._run_task, check_config=self.check_config)

    def _run_task(self, context: TaskContext) -> dict[str, Any]:
        try:
            config = self.settings(context.config)
        except BadInput as error:
            raise TaskFailed(error.message) from None
        context.progress(1, "leasing devices")
        try:
            lease = (
                context.lease(config.nproc, exclusive=True, memory_mb=PREFLIGHT_MEMORY_MB)
                if self.allocator.gpu_available
                else context.lease()
            )
        except AllocationError as error:
            raise TaskFailed(f"no devices for the preflight: {error}") from None
        where = f"GPUs {', '.join(map(str, lease.gpus))}" if lease.gpus else "the CPU"
        context.log(f"preflight on {config.nproc} ranks, {where}; watchdog {config.watchdog_s:g} s")
        context.progress(3, "starting torchrun")

        def log(line: str) -> None:
            context.log(line)
            if match := _STEP.match(line):
                done, total = int(match.group(1)), int(match.group(2))
                context.progress(5 + 90 * done / total, match.group(3))

        launcher = TorchrunLauncher(watchdog_s=config.watchdog_s, grace_s=self.grace_s)
        try:
            result = run_preflight(
                lease,
                self.allocator,
                config.nproc,
                context.folder,
                log,
                lambda: context.cancelled,
                launcher=launcher,
                crash_rank=config.crash_rank,
                hang_rank=config.hang_rank,
            )
        except LaunchCancelled:
            raise TaskCancelled() from None
        except (LaunchError, ValueError) as error:
            raise TaskFailed(f"preflight failed: {error}") from None
        return _report(result)


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise BadInput(f"{name} must be a whole number; got {value!r}")
    return int(value)


def _report(result: PreflightResult) -> dict[str, Any]:
    report = asdict(result)
    report["result_file"] = result.result_file.name  # relative to the task folder
    return report
