"""Runs one `torchrun` job on leased devices and supervises it until it ends, fails, hangs or is cancelled.

The job is `<python> -m torch.distributed.run --standalone ...`, with the engine's own Python when
it has one (another environment's interpreter), so the studio never imports the job's code. The
standalone rendezvous binds port 0: the OS picks a free port for each job, so several jobs run side
by side. torchrun starts each rank in a session of its own (`start_new_session`), so stopping a job
means stopping every process of the tree, not one process group: the job runs under
`engines.supervisor.SupervisedProcess`, which keeps track of the tree (psutil), sends SIGTERM to each
group in it, and SIGKILL to whatever is left after a grace period. What is torchrun's own stays here:
the command, the environment, the ranks' lines, when a job counts as hung, and why it failed.

Every line a rank prints reaches the `log` callback as `[rank N] ...` (torchrun's `--tee` copies
each rank's stdout/stderr to its own console, prefixed with the global rank); tqdm's carriage
returns count as line ends, so a progress bar is progress. A job is hung when, for `watchdog_s`
seconds, no line came and the heartbeat file (`$STUDIO_HEARTBEAT_FILE`, which a job may touch
instead of printing) did not change; until a rank first prints or touches it, the limit is
`startup_s` instead (starting Python, importing torch and the rendezvous take unpredictable time on
a busy machine, and are not a hang). When a rank crashes torchrun ends the others; the error then
names that rank and the last lines it printed (its traceback), not torchrun's own stack.

The lease is not released here: whoever acquired it releases it (the task runner releases every
lease a task holds however the task ended; `GpuAllocator.lease()` releases on exit).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.gpu import GpuAllocator, Lease
from engines.supervisor import SupervisedProcess

MAX_CPU_PROCS = 4  # ranks on a CPU lease (gloo): enough to test sharding, few enough not to thrash
HEARTBEAT_ENV = "STUDIO_HEARTBEAT_FILE"
# torchrun's --tee prefix (set below to the global rank), then torch's own "[rankN]: " on tracebacks.
_RANK_PREFIX = re.compile(r"^\[rank(\d+)\]:(?:\[rank\1\]: ?)?")
_ROOT_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_ROOT_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
TAIL_LINES = 40  # kept per rank for the failure message


class LaunchError(RuntimeError):
    """The job failed; the message says why (the failing rank and its last lines)."""


class LaunchHung(LaunchError):
    """No output and no heartbeat for the watchdog period: the job was stopped."""


class LaunchCancelled(Exception):
    """The job was cancelled and its processes stopped."""


@dataclass(frozen=True)
class LaunchResult:
    """A job that ended with exit code 0."""

    returncode: int
    seconds: float
    output_dir: Path
    log_dir: Path  # torchrun's per-rank logs (stdout.log / stderr.log under <run id>/attempt_0/<rank>)


def check_world(world_size: int, lease: Lease, max_cpu_procs: int = MAX_CPU_PROCS) -> None:
    """ValueError unless `world_size` ranks fit the lease: one GPU per rank, or a few CPU processes."""
    if world_size < 1:
        raise ValueError(f"a job needs at least one process; got {world_size}")
    if lease.gpus:
        if world_size > len(lease.gpus):
            raise ValueError(
                f"{world_size} processes need {world_size} GPUs (one each); the lease holds "
                f"{len(lease.gpus)} ({', '.join(map(str, lease.gpus))})"
            )
    elif world_size > max_cpu_procs:
        raise ValueError(
            f"{world_size} processes on the CPU is more than the {max_cpu_procs} allowed "
            "(no GPU is leased: use fewer processes)"
        )


def validate_parallel(
    *,
    world_size: int,
    lease: Lease,
    allocator: GpuAllocator,
    num_heads: int | None = None,
    ulysses: int = 1,
    ring: int = 1,
    memory_mb: int = 0,
    max_cpu_procs: int = MAX_CPU_PROCS,
) -> None:
    """Check a parallel layout before anything is launched; ValueError says what to change.

    Sequence parallelism uses every rank (`ulysses * ring == world_size`); Ulysses splits the
    attention heads, so `num_heads % ulysses == 0`; each rank needs its own leased GPU with about
    `memory_mb` free (the allocator's device inventory, less what other leases booked), or, on a
    CPU lease, at most `max_cpu_procs` processes.
    """
    if ulysses < 1 or ring < 1:
        raise ValueError(f"ulysses and ring degrees must be at least 1; got {ulysses} and {ring}")
    if ulysses * ring != world_size:
        raise ValueError(
            f"ulysses ({ulysses}) x ring ({ring}) = {ulysses * ring} must equal the number of processes "
            f"({world_size}): sequence parallelism spans every rank"
        )
    if num_heads is not None and num_heads % ulysses:
        divisors = [n for n in range(1, num_heads + 1) if num_heads % n == 0]
        raise ValueError(
            f"the model has {num_heads} attention heads, which do not split across {ulysses} Ulysses ranks; "
            f"use a degree that divides {num_heads}: {', '.join(map(str, divisors[:8]))}"
        )
    check_world(world_size, lease, max_cpu_procs)
    if not lease.gpus or memory_mb <= 0:
        return
    devices = {device.index: device for device in allocator.devices}
    for index in lease.gpus[:world_size]:
        device = devices.get(index)
        if device is None:
            raise ValueError(f"GPU {index} is leased but the allocator does not know it")
        booked = sum(
            other.memory_mb for other in allocator.leases() if index in other.gpus and other is not lease
        )
        available = min(device.free_mb, device.total_mb - booked)
        if available < memory_mb:
            raise ValueError(
                f"GPU {index} ({device.name}) has about {available} MB free; this job needs about "
                f"{memory_mb} MB per GPU: use more GPUs, a lower-memory preset, or free the GPU"
            )


class TorchrunLauncher:
    """Builds a torchrun command for a lease, runs it in its own session and supervises it to the end."""

    def __init__(
        self,
        python: Path | str | None = None,
        *,
        watchdog_s: float = 600.0,
        grace_s: float = 10.0,
        startup_s: float | None = None,
        poll_s: float = 0.2,
        max_cpu_procs: int = MAX_CPU_PROCS,
    ) -> None:
        self.python = str(python) if python else sys.executable
        self.watchdog_s = watchdog_s
        self.startup_s = startup_s if startup_s is not None else max(watchdog_s, 300.0)
        self.grace_s = grace_s
        self.poll_s = poll_s  # how often cancel and the watchdog are checked
        self.max_cpu_procs = max_cpu_procs

    # ---- the command -------------------------------------------------------------------------------
    def command(self, nproc: int, target: Sequence[str], log_dir: Path, *, module: bool = False) -> list[str]:
        """`<python> -m torch.distributed.run ... [-m] <target...>`: target is a script (or module) and its args."""
        return [
            self.python,
            "-m",
            "torch.distributed.run",
            "--standalone",  # local c10d rendezvous on port 0: a free port per job
            "--nnodes",
            "1",
            "--nproc-per-node",
            str(nproc),
            "--max-restarts",
            "0",  # a failed rank fails the job; the studio reports it rather than retrying
            "--tee",
            "3",  # each rank's stdout and stderr to the console (prefixed) and to its log file
            "--log-dir",
            str(log_dir),
            *(["-m"] if module else []),
            *target,
        ]

    def environment(
        self, lease: Lease, nproc: int, heartbeat: Path, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The job's environment: the lease's devices, unbuffered output, NCCL error handling, threads."""
        env = dict(os.environ)
        env.update(lease.env)  # CUDA_VISIBLE_DEVICES: only the leased GPUs ("" on a CPU lease)
        cpus = os.cpu_count() or 1
        env.update(
            {
                "PYTHONUNBUFFERED": "1",  # lines reach the log as they are printed
                "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[rank${rank}]:",  # global rank, not local
                # A failed or timed-out NCCL collective aborts the process instead of blocking forever.
                "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
                "TORCH_NCCL_ENABLE_MONITORING": "1",
                "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": str(max(60, math.ceil(self.watchdog_s))),
                "OMP_NUM_THREADS": "1" if not lease.gpus else str(max(1, cpus // nproc)),
                "HF_HUB_OFFLINE": "1",  # weights are local; nothing is fetched at run time
                HEARTBEAT_ENV: str(heartbeat),
            }
        )
        env.update(extra or {})
        return env

    # ---- running -----------------------------------------------------------------------------------
    def run(
        self,
        lease: Lease,
        nproc: int,
        target: Sequence[str],
        *,
        output_dir: Path,
        log: Callable[[str], None],
        cancelled: Callable[[], bool] = lambda: False,
        module: bool = False,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> LaunchResult:
        """Run the job to its end and return its result.

        Raises LaunchCancelled when `cancelled()` turns true, LaunchHung when the watchdog fires,
        LaunchError when it fails; in every case (an exception from `log` or `cancelled` included)
        no process of the job is left running.
        """
        check_world(nproc, lease, self.max_cpu_procs)
        if not Path(self.python).is_file():
            raise LaunchError(f"the job's Python {self.python} does not exist")
        output_dir.mkdir(parents=True, exist_ok=True)
        log_dir = log_dir or output_dir / "_torchrun"
        log_dir.mkdir(parents=True, exist_ok=True)
        heartbeat = log_dir / "heartbeat"
        heartbeat.touch()
        command = self.command(nproc, target, log_dir, module=module)
        watch = _Watch(heartbeat)

        def stop_asked() -> bool:
            if cancelled():
                log("[launcher] cancelled: stopping every process of the job")
                return True
            return False

        job = SupervisedProcess(
            command,
            cwd=cwd,
            env=self.environment(lease, nproc, heartbeat, env),
            on_line=lambda line: log(watch.see(line)),
            cancelled=stop_asked,
            heartbeat=heartbeat,
            hang=lambda silent: self._hung(watch, silent, log),
            grace_s=self.grace_s,
            poll_s=self.poll_s,
        )
        try:
            job.start()
        except OSError as error:  # not executable, or the working folder is missing
            raise LaunchError(f"cannot start {self.python} in {cwd or os.getcwd()}: {error}") from None
        outcome = (
            job.wait()
        )  # whatever ends it (done, failed, hung, cancelled, a callback raising): no survivors
        if outcome.cancelled:
            raise LaunchCancelled("the job was cancelled")
        if outcome.hung:
            raise LaunchHung(outcome.reason)
        if outcome.returncode != 0:
            raise LaunchError(watch.failure_reason(outcome.returncode))
        return LaunchResult(outcome.returncode, outcome.seconds, output_dir, log_dir)

    def _hung(self, watch: _Watch, silent: float, log: Callable[[str], None]) -> str | None:
        """Why the job counts as hung after `silent` seconds without output or heartbeat (None: it does not)."""
        if not watch.started() and silent > self.startup_s:
            log(f"[launcher] no rank started in {silent:.0f} s: stopping the job")
            return (
                f"no rank started within {self.startup_s:g} s (imports or the rendezvous hung?), so the job "
                f"was stopped. Last output: {watch.last_line or '(none)'}"
            )
        if watch.started() and silent > self.watchdog_s:
            log(f"[launcher] no output and no heartbeat for {silent:.0f} s: stopping the job")
            return (
                f"no progress for {self.watchdog_s:g} s (a rank hung?): no output and no heartbeat, so the "
                f"job was stopped. Last output: {watch.last_line or '(none)'}"
            )
        return None


class _Watch:
    """What the launcher knows of a job's output: whether a rank started, and each rank's last lines."""

    def __init__(self, heartbeat: Path) -> None:
        self.heartbeat = heartbeat
        self.launched = heartbeat.stat().st_mtime  # touched by the launcher just before the start
        self.rank_spoke = False
        self.last_line = ""
        self.rank_tails: dict[int, deque[str]] = {}
        self.own_tail: deque[str] = deque(maxlen=200)  # torchrun's own lines (its failure summary)

    def see(self, raw: str) -> str:
        """Record a line; return it as the log shows it (`[rank N] text` or `[torchrun] text`)."""
        match = _RANK_PREFIX.match(raw)
        if match:
            rank, text = int(match.group(1)), raw[match.end() :]
            self.rank_spoke = True
            self.rank_tails.setdefault(rank, deque(maxlen=TAIL_LINES)).append(text)
            shown = f"[rank {rank}] {text}"
        else:
            self.own_tail.append(raw)
            shown = f"[torchrun] {raw}"
        self.last_line = shown
        return shown

    def started(self) -> bool:
        """Whether a rank has shown life: printed a line or touched the heartbeat."""
        if not self.rank_spoke:
            with contextlib.suppress(OSError):
                self.rank_spoke = self.heartbeat.stat().st_mtime > self.launched
        return self.rank_spoke

    def failure_reason(self, returncode: int) -> str:
        """The failing rank (torchrun's "Root Cause") and its last lines; else torchrun's own last lines."""
        rank, exitcode = self._root_cause()
        if rank is None:
            tail = [line for line in self.own_tail if line.strip()][-5:]
            return f"torchrun failed (exit code {returncode}): " + ("\n".join(tail) or "no output")
        how = f"exit code {exitcode}"
        if exitcode is not None and exitcode < 0:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-exitcode).name}"
            if exitcode == -signal.SIGKILL:
                how += " (often the kernel's out-of-memory killer)"
        tail = [line for line in self.rank_tails.get(rank, ()) if line.strip()][-3:]
        return f"rank {rank} failed ({how}): " + ("\n".join(tail) or "it printed nothing")

    def _root_cause(self) -> tuple[int | None, int | None]:
        lines = list(self.own_tail)
        starts = [i for i, line in enumerate(lines) if "Root Cause" in line]
        if not starts:
            return None, None
        rank = exitcode = None
        for line in lines[starts[-1] :]:
            if rank is None and (match := _ROOT_RANK.match(line)):
                rank = int(match.group(1))
            elif exitcode is None and (match := _ROOT_EXIT.match(line)):
                exitcode = int(match.group(1))
        return rank, exitcode
