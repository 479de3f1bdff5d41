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
from dataclasses import asdict
from typing import Any

from pydantic import Field

from engines.distributed.preflight import HEADS, PREFLIGHT_MEMORY_MB, PreflightResult, run_preflight
from engines.gpu import AllocationError, GpuAllocator
from engines.launcher import MAX_CPU_PROCS, LaunchCancelled, LaunchError, TorchrunLauncher
from studio.errors import BadInput
from studio.tasks.configs import TaskConfig
from studio.tasks.runner import TaskCancelled, TaskContext, TaskFailed, TaskKind

DEFAULT_WATCHDOG_S = 120.0  # the tiny job prints every few seconds; two minutes of silence is a hang
_STEP = re.compile(r"^\[rank 0\] preflight step (\d+)/(\d+): (.*)$")


class PreflightConfig(TaskConfig):
    """A "preflight" task: how many ranks, the watchdog, and the optional rank to crash or hang (a
    drill). How many ranks fit is this machine's: `DistributedService.prepare_task` checks it."""

    nproc: int = Field(2, ge=1, description="ranks: GPUs here, else CPU processes")
    watchdog_s: float = Field(
        DEFAULT_WATCHDOG_S, ge=1, le=3600, description="seconds of silence that is a hang"
    )
    crash_rank: int | None = Field(None, ge=0, description="a drill: this rank crashes")
    hang_rank: int | None = Field(None, ge=0, description="a drill: this rank hangs")


class DistributedService:
    """Runs the distributed preflight as a task on devices leased from the allocator."""

    def __init__(self, allocator: GpuAllocator, grace_s: float = 10.0) -> None:
        self.allocator = allocator
        self.grace_s = grace_s  # SIGTERM -> SIGKILL wait when a job is stopped

    def prepare_task(self, config: PreflightConfig) -> PreflightConfig:
        """The config checked against this machine: BadInput says what to fix."""
        most = len(self.allocator.devices) or MAX_CPU_PROCS
        where = "GPUs on this machine" if self.allocator.devices else "CPU processes allowed (no GPU)"
        nproc = config.nproc
        if not 1 <= nproc <= most:
            raise BadInput(f"nproc must be between 1 and {most} ({most} {where}); got {nproc}", "bad_nproc")
        if HEADS % nproc:
            fits = [n for n in range(1, most + 1) if HEADS % n == 0]
            raise BadInput(
                f"nproc must divide the preflight model's {HEADS} attention heads (Ulysses gives each rank "
                f"whole heads): {', '.join(map(str, fits))}; got {nproc}",
                "bad_nproc",
            )
        for key in ("crash_rank", "hang_rank"):
            rank = getattr(config, key)
            if rank is not None and not rank < nproc:
                raise BadInput(f"{key} must be a rank from 0 to {nproc - 1}; got {rank}", f"bad_{key}")
        return config

    def task_kind(self) -> TaskKind:
        return TaskKind("preflight", self._run_task, config=PreflightConfig, prepare=self.prepare_task)

    def _run_task(self, context: TaskContext) -> dict[str, Any]:
        try:
            config = self.prepare_task(context.request)  # again: this machine's GPUs may have changed
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


def _report(result: PreflightResult) -> dict[str, Any]:
    report = asdict(result)
    report["result_file"] = result.result_file.name  # relative to the task folder
    return report
