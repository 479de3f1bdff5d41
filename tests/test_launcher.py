"""torchrun launcher and distributed preflight: real torchrun jobs, 2 gloo ranks on the CPU.

The preflight shards a tiny random Wan transformer with FSDP2 and runs Ulysses attention; these
tests check its results against single-process ones, and that a crashing rank, a hanging rank and a
cancel each end the job with the right error, leave no process behind and release the lease (through
the "preflight" task kind as the studio runs it). The parallel-layout checks run on a GPU inventory
given to the allocator, as `probe_cuda_devices` would report it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil
import pytest

from engines.distributed.preflight import PreflightResult, run_preflight
from engines.gpu import GpuAllocator, GpuDevice
from engines.launcher import LaunchCancelled, LaunchError, LaunchHung, TorchrunLauncher, validate_parallel
from studio.errors import BadInput
from studio.services.distributed import DistributedService, PreflightConfig
from studio.tasks.runner import TaskRunner
from studio.tasks.store import TaskStatus, TaskStore


def rank_pids(out: Path) -> list[int]:
    return [json.loads(p.read_text())["pid"] for p in sorted(out.glob("rank*.json"))]


def running(pids: list[int]) -> list[int]:
    """The pids still running (a zombie waiting to be reaped has stopped running)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def descendants(before: set[int] | None = None) -> list[psutil.Process]:
    """This process's children (recursively), leaving out the pids in `before` (other tests' servers
    and browsers that run for the whole session)."""
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in (before or set())]


def existing() -> set[int]:
    return {p.pid for p in descendants()}


def no_survivors(processes: list[psutil.Process]) -> bool:
    """True once none of `processes` runs (zombies left to init are reaped within a moment)."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if not running([p.pid for p in processes if p.is_running()]):
            return True
        time.sleep(0.1)
    return False


# ---- layout checks (no processes) ------------------------------------------------------------------
def test_parallel_layouts_are_checked_before_launching(tmp_path: Path) -> None:
    cpu = GpuAllocator([])
    with cpu.lease("job") as lease:
        validate_parallel(world_size=4, lease=lease, allocator=cpu, num_heads=8, ulysses=4)
        with pytest.raises(ValueError, match="5 processes on the CPU is more than the 4 allowed"):
            validate_parallel(world_size=5, lease=lease, allocator=cpu, ulysses=5)
        with pytest.raises(ValueError, match=r"ulysses \(2\) x ring \(1\) = 2 must equal .* \(4\)"):
            validate_parallel(world_size=4, lease=lease, allocator=cpu, ulysses=2)
        # The preflight's model has 8 heads: 3 ranks are refused before torchrun starts.
        started = time.monotonic()
        with pytest.raises(ValueError, match="8 attention heads, which do not split across 3 Ulysses ranks"):
            run_preflight(lease, cpu, 3, tmp_path, print)
        assert time.monotonic() - started < 1 and not list(tmp_path.iterdir())

    gpus = GpuAllocator([GpuDevice(0, "A", 81_000, 80_000), GpuDevice(1, "B", 81_000, 30_000)])
    lease = gpus.acquire("video", 2, exclusive=True)
    validate_parallel(world_size=2, lease=lease, allocator=gpus, num_heads=40, ulysses=2, memory_mb=30_000)
    with pytest.raises(ValueError, match=r"GPU 1 \(B\) has about 30000 MB free; this job needs about 45000"):
        validate_parallel(
            world_size=2, lease=lease, allocator=gpus, num_heads=40, ulysses=2, memory_mb=45_000
        )
    with pytest.raises(ValueError, match=r"3 processes need 3 GPUs .* the lease holds 2"):
        validate_parallel(world_size=3, lease=lease, allocator=gpus, num_heads=24, ulysses=3)
    with pytest.raises(ValueError, match=r"40 attention heads, .* across 3 .*: 1, 2, 4, 5, 8, 10"):
        validate_parallel(world_size=3, lease=lease, allocator=gpus, num_heads=40, ulysses=3, ring=1)


def test_the_command_is_a_standalone_torchrun_with_the_given_python(tmp_path: Path) -> None:
    launcher = TorchrunLauncher("/opt/multitalk/bin/python")
    command = launcher.command(4, ["generate.py", "--x", "1"], tmp_path)
    assert command[:3] == ["/opt/multitalk/bin/python", "-m", "torch.distributed.run"]
    assert "--standalone" in command and command[-3:] == ["generate.py", "--x", "1"]
    assert command[command.index("--nproc-per-node") + 1] == "4"
    cpu = GpuAllocator([])
    with cpu.lease("job") as lease:
        env = launcher.environment(lease, 2, tmp_path / "hb")
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    gpus = GpuAllocator([GpuDevice(i, "H", 81_000, 81_000) for i in range(4)])
    lease = gpus.acquire("video", 2, exclusive=True)
    visible = launcher.environment(lease, 2, tmp_path / "hb")["CUDA_VISIBLE_DEVICES"]
    assert visible == ",".join(map(str, lease.gpus)) and len(visible.split(",")) == 2  # only the leased GPUs
    with pytest.raises(LaunchError, match="Python /opt/multitalk/bin/python does not exist"):
        launcher.run(lease, 2, ["x.py"], output_dir=tmp_path, log=print)


# ---- real jobs -------------------------------------------------------------------------------------
@pytest.mark.slow  # four ranks at once: ~15 s on 2 idle cores, ~40 s on busy ones
def test_preflight_passes_and_two_jobs_run_side_by_side(tmp_path: Path) -> None:
    allocator = GpuAllocator([])
    results: dict[str, PreflightResult] = {}
    logs: dict[str, dict[str, float]] = {"a": {}, "b": {}}  # line -> when it came
    errors: list[BaseException] = []

    def job(name: str) -> None:
        def log(line: str) -> None:
            logs[name].setdefault(line, time.monotonic())

        try:
            with allocator.lease(f"preflight-{name}") as lease:
                results[name] = run_preflight(lease, allocator, 2, tmp_path / name, log)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=job, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert set(results) == {"a", "b"}
    up = {
        name: logs[name]["[rank 0] preflight step 1/5: process group up (gloo, 2 ranks, cpu)"]
        for name in logs
    }
    passed = {name: next(t for line, t in logs[name].items() if "PREFLIGHT PASS" in line) for name in logs}
    assert max(up.values()) < min(passed.values())  # both process groups were up at the same time
    for name, result in results.items():
        assert result.passed and result.world_size == 2 and result.backend == "gloo"
        assert result.fsdp_max_abs_diff < 1e-5 and result.ulysses_max_abs_diff < 1e-5
        assert 0.45 < result.sharded_fraction < 0.55  # each rank held half of the parameters
        written = json.loads(result.result_file.read_text())
        assert written["passed"] is True and written["model"]["num_attention_heads"] == 8
        assert any(line.startswith("[rank 0] PREFLIGHT PASS: 2 ranks on gloo") for line in logs[name])
        assert len(rank_pids(tmp_path / name)) == 2 and not running(rank_pids(tmp_path / name))
        print(f"preflight {name}: wall {result.wall_seconds:.1f} s, job {result.job_seconds:.1f} s")
    assert allocator.leases() == []


def test_a_crashing_rank_fails_the_job_with_its_error(tmp_path: Path) -> None:
    allocator, lines, before = GpuAllocator([]), [], existing()
    with allocator.lease("crash") as lease, pytest.raises(LaunchError) as failed:
        run_preflight(lease, allocator, 2, tmp_path, lines.append, crash_rank=1)
    message = str(failed.value)
    assert message.startswith("rank 1 failed (exit code 1):")
    assert "RuntimeError: preflight: rank 1 crashed on purpose (--crash-rank 1)" in message
    assert "[rank 1] Traceback (most recent call last):" in lines  # the whole traceback is in the log
    assert not isinstance(failed.value, LaunchHung)
    assert not running(rank_pids(tmp_path)) and not running([p.pid for p in descendants(before)])


def test_a_hanging_rank_is_stopped_by_the_watchdog(tmp_path: Path) -> None:
    allocator, seen = GpuAllocator([]), {}  # line -> when it came
    launcher = TorchrunLauncher(watchdog_s=10, grace_s=3)
    with (
        allocator.lease("hang") as lease,
        pytest.raises(LaunchHung, match=r"no progress for 10 s \(a rank hung\?\)"),
    ):
        run_preflight(
            lease,
            allocator,
            2,
            tmp_path,
            lambda line: seen.setdefault(line, time.monotonic()),
            launcher=launcher,
            hang_rank=1,
        )
    started = seen["[rank 0] preflight step 1/5: process group up (gloo, 2 ranks, cpu)"]  # both ranks were up
    assert not any("step 2/5" in line for line in seen)  # rank 0 waited for the hung rank
    fired = next(
        when for line, when in seen.items() if line.startswith("[launcher] no output and no heartbeat")
    )
    assert 10 <= fired - started < 12, fired - started  # silent for the watchdog period, then stopped
    assert len(rank_pids(tmp_path)) == 2 and not running(rank_pids(tmp_path))


def test_a_job_that_never_starts_is_stopped_after_the_startup_limit(tmp_path: Path) -> None:
    script = tmp_path / "silent.py"
    script.write_text("import time\ntime.sleep(120)\n")  # never prints, never touches the heartbeat
    allocator, lines, before = GpuAllocator([]), [], existing()
    launcher = TorchrunLauncher(watchdog_s=2, startup_s=6, grace_s=2)
    started = time.monotonic()
    with allocator.lease("silent") as lease, pytest.raises(LaunchHung, match=r"no rank started within 6 s"):
        launcher.run(lease, 2, [str(script)], output_dir=tmp_path / "out", log=lines.append)
    assert 6 <= time.monotonic() - started < 6 + 2 + 5
    assert not running([p.pid for p in descendants(before)])


def test_cancel_stops_every_process_of_the_job(tmp_path: Path) -> None:
    allocator, lines, before = GpuAllocator([]), [], existing()
    snapshot: list[psutil.Process] = []

    def cancelled() -> bool:
        if any("step 1/5" in line for line in lines):  # both ranks are up
            snapshot.extend(descendants(before))  # torchrun and its ranks, as they are now
            return True
        return False

    started = time.monotonic()
    with allocator.lease("cancel") as lease, pytest.raises(LaunchCancelled):
        run_preflight(lease, allocator, 2, tmp_path, lines.append, cancelled, hang_rank=1)
    assert len(snapshot) >= 3  # torchrun + 2 ranks
    assert set(rank_pids(tmp_path)) <= {p.pid for p in snapshot}
    assert no_survivors(snapshot)
    assert "[launcher] cancelled: stopping every process of the job" in lines
    assert time.monotonic() - started < 30


# ---- through the task kind -------------------------------------------------------------------------
def preflight_runner(tmp_path: Path, allocator: GpuAllocator) -> TaskRunner:
    runner = TaskRunner(TaskStore(tmp_path / "tasks"), allocator)
    runner.register(DistributedService(allocator, grace_s=3).task_kind())
    runner.start()
    return runner


def test_preflight_task_fails_with_the_ranks_error_and_releases_its_lease(tmp_path: Path) -> None:
    allocator = GpuAllocator([])
    runner = preflight_runner(tmp_path, allocator)
    task = runner.submit("preflight", "drill", {"nproc": 2, "crash_rank": 0})
    done = runner.wait(task.task_id, timeout=90)
    assert done.status == TaskStatus.FAILED
    assert done.error_message.startswith("preflight failed: rank 0 failed (exit code 1):")
    assert "crashed on purpose (--crash-rank 0)" in done.error_message
    log = runner.store.read_log(task.task_id)
    assert "[rank 0] Traceback (most recent call last):" in log and "released 1 device lease(s)" in log
    assert allocator.leases() == []
    assert not running(rank_pids(runner.store.folder(task.task_id)))
    runner.stop()


def test_preflight_task_cancel_stops_the_job_and_releases_its_lease(tmp_path: Path) -> None:
    allocator = GpuAllocator([])
    runner = preflight_runner(tmp_path, allocator)
    task = runner.submit("preflight", "hang", {"nproc": 2, "hang_rank": 1, "watchdog_s": 300})
    deadline = time.monotonic() + 60
    while "step 1/5" not in runner.store.read_log(task.task_id):
        assert time.monotonic() < deadline, runner.store.read_log(task.task_id)
        time.sleep(0.1)
    assert allocator.leases()  # held while the job runs
    pids = rank_pids(runner.store.folder(task.task_id))
    runner.cancel(task.task_id)
    done = runner.wait(task.task_id, timeout=30)
    assert done.status == TaskStatus.CANCELLED
    assert done.progress > 5  # step 1 moved the progress
    assert allocator.leases() == [] and len(pids) == 2 and not running(pids)
    log = runner.store.read_log(task.task_id)
    assert "[launcher] cancelled: stopping every process of the job" in log and "cancelled" in log
    runner.stop()


def test_preflight_task_config_is_checked_when_the_task_is_created(tmp_path: Path) -> None:
    allocator = GpuAllocator([])
    service = DistributedService(allocator)
    assert service.prepare_task(PreflightConfig()).model_dump() == {
        "nproc": 2,
        "watchdog_s": 120.0,
        "crash_rank": None,
        "hang_rank": None,
    }
    runner = TaskRunner(TaskStore(tmp_path / "tasks"), allocator)
    runner.register(service.task_kind())
    with pytest.raises(BadInput, match="nproc must be between 1 and 4"):
        runner.submit("preflight", "too many", {"nproc": 5})
    assert runner.store.list() == []  # refused before a task existed
    refused = {
        "nproc must be between 1 and 4": {"nproc": 9},
        r"nproc must divide the preflight model's 8 attention heads .*: 1, 2, 4; got 3": {"nproc": 3},
        "crash_rank must be a rank from 0 to 1": {"nproc": 2, "crash_rank": 2},
        "config.watchdog_s: Input should be a valid number": {"watchdog_s": "soon"},
        "config.hang_rank: Input should be greater than or equal to 0": {"hang_rank": -1},
        "config.nproc: Input should be a valid integer": {"nproc": 2.5},
        "config.ranks: Extra inputs are not permitted": {"ranks": 2},
    }
    for message, config in refused.items():
        with pytest.raises(BadInput, match=message):
            runner.submit("preflight", "refused", config)
    assert runner.store.list() == []
    gpus = DistributedService(GpuAllocator([GpuDevice(i, "H", 81_000, 81_000) for i in range(8)]))
    assert gpus.prepare_task(PreflightConfig(nproc=8)).nproc == 8


def test_a_two_process_job_takes_a_two_device_lease_end_to_end(tmp_path: Path) -> None:
    """With two GPUs in the inventory (as probe_cuda_devices reports them), a 2-rank job leases both,
    exclusively, for as long as it runs; its ranks see them as CUDA_VISIBLE_DEVICES and, with no CUDA
    on this machine, meet over gloo."""
    allocator = GpuAllocator([GpuDevice(i, "H100", 81_559, 81_000) for i in range(2)])
    runner = preflight_runner(tmp_path, allocator)
    task = runner.submit("preflight", "two", {"nproc": 2})
    deadline = time.monotonic() + 60
    while "step 1/5" not in runner.store.read_log(task.task_id):
        assert time.monotonic() < deadline, runner.store.read_log(task.task_id)
        time.sleep(0.1)
    [lease] = allocator.leases()
    assert lease.gpus == (0, 1) and lease.exclusive and lease.owner == task.task_id
    done = runner.wait(task.task_id, timeout=120)
    assert done.status == TaskStatus.COMPLETED, runner.store.read_log(task.task_id)[-2000:]
    assert done.result["world_size"] == 2 and done.result["backend"] == "gloo"
    log = runner.store.read_log(task.task_id)
    assert "preflight on 2 ranks, GPUs 0, 1" in log and "released 1 device lease(s)" in log
    assert allocator.leases() == []
    runner.stop()
