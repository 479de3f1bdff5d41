"""GPU allocator: knows the devices and leases them to jobs.

Every engine and task asks the allocator for its device instead of picking one itself, so two
jobs never fight over a card and a job that dies always gives its devices back (leases are
released by the context manager, by the task runner when a task ends, and reclaimed when the
process that held them is gone). With no CUDA device the allocator hands out the CPU.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class AllocationError(RuntimeError):
    """A lease that cannot be granted now (or ever, on this machine): the message says why."""


@dataclass(frozen=True)
class GpuDevice:
    """One CUDA device as the allocator sees it."""

    index: int
    name: str
    total_mb: int
    free_mb: int


@dataclass
class Lease:
    """Devices granted to one job. `device` is what torch code should use; `env` goes to subprocesses."""

    lease_id: str
    owner: str
    gpus: tuple[int, ...]
    exclusive: bool
    memory_mb: int
    pid: int = field(default_factory=os.getpid)

    @property
    def device(self) -> str:
        return f"cuda:{self.gpus[0]}" if self.gpus else "cpu"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a child process: it sees only its leased GPUs (renumbered from 0)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in self.gpus)}


def probe_cuda_devices() -> list[GpuDevice]:
    """The CUDA devices torch can see, with their free memory now; [] on a CPU-only machine."""
    if not _cuda_device_nodes():
        return []  # without importing torch, which would stay resident (~150 MB) to find nothing
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        devices.append(GpuDevice(index, torch.cuda.get_device_name(index), total // 2**20, free // 2**20))
    return devices


def _cuda_device_nodes() -> bool:
    """Whether a CUDA device could be visible here: not on Linux without NVIDIA's device nodes (nor
    WSL's /dev/dxg); elsewhere (no /dev to read) torch is asked."""
    if not sys.platform.startswith("linux"):
        return True
    dev = Path("/dev")
    return (dev / "nvidiactl").exists() or (dev / "dxg").exists() or any(dev.glob("nvidia[0-9]*"))


class GpuAllocator:
    """Leases GPUs to jobs: exclusive (a training run, a video job) or shared (inference engines).

    A shared lease books `memory_mb` on a device; several shared leases fit on one device while the
    booked memory fits. An exclusive lease takes whole devices that nobody else holds.
    """

    def __init__(self, devices: list[GpuDevice] | None = None) -> None:
        self._devices = probe_cuda_devices() if devices is None else list(devices)
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Condition()

    @property
    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    @property
    def gpu_available(self) -> bool:
        return bool(self._devices)

    def leases(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def acquire(
        self,
        owner: str,
        count: int = 1,
        *,
        exclusive: bool = False,
        memory_mb: int = 0,
        timeout: float = 0.0,
        allow_cpu: bool = True,
    ) -> Lease:
        """Lease `count` GPUs (or the CPU when there are none and `allow_cpu`).

        Waits up to `timeout` seconds for busy devices; raises AllocationError with the reason.
        """
        if not self._devices:
            if not allow_cpu:
                raise AllocationError(
                    "this job needs a CUDA GPU and none is visible (torch.cuda.is_available() is False)"
                )
            return self._grant(Lease(uuid.uuid4().hex, owner, (), exclusive, 0))
        if count > len(self._devices):
            raise AllocationError(f"{count} GPUs asked for, this machine has {len(self._devices)}")
        too_small = [d.index for d in self._devices if d.total_mb < memory_mb]
        if len(too_small) > len(self._devices) - count:
            raise AllocationError(f"{memory_mb} MB per GPU asked for; GPUs {too_small} have less in total")
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._reclaim_dead()
                chosen = self._choose(count, exclusive, memory_mb)
                if chosen is not None:
                    return self._grant(Lease(uuid.uuid4().hex, owner, chosen, exclusive, memory_mb))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    busy = ", ".join(
                        f"{lease.owner} on {list(lease.gpus)}" for lease in self._leases.values()
                    )
                    raise AllocationError(f"no {count} free GPU(s) for {owner}: held by {busy or 'nobody'}")
                self._lock.wait(min(remaining, 1.0))

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(lease.lease_id, None)
            self._lock.notify_all()

    def release_owner(self, owner: str) -> int:
        """Release every lease an owner holds (a task that ended or died); returns how many."""
        with self._lock:
            ids = [lid for lid, lease in self._leases.items() if lease.owner == owner]
            for lid in ids:
                del self._leases[lid]
            self._lock.notify_all()
            return len(ids)

    @contextmanager
    def lease(self, owner: str, count: int = 1, **kwargs: object) -> Iterator[Lease]:
        """`with allocator.lease("task-1", 2, exclusive=True) as lease:` releases even when the job raises."""
        granted = self.acquire(owner, count, **kwargs)  # type: ignore[arg-type]
        try:
            yield granted
        finally:
            self.release(granted)

    def _grant(self, lease: Lease) -> Lease:
        with self._lock:
            self._leases[lease.lease_id] = lease
        return lease

    def _choose(self, count: int, exclusive: bool, memory_mb: int) -> tuple[int, ...] | None:
        candidates = []
        for device in self._devices:
            holders = [lease for lease in self._leases.values() if device.index in lease.gpus]
            if any(lease.exclusive for lease in holders) or (exclusive and holders):
                continue
            booked = sum(lease.memory_mb for lease in holders)
            room = device.total_mb - booked
            if room >= memory_mb:
                candidates.append((room, device.index))
        if len(candidates) < count:
            return None
        candidates.sort(reverse=True)  # most room first
        return tuple(sorted(index for _, index in candidates[:count]))

    def _reclaim_dead(self) -> None:
        for lease_id, lease in list(self._leases.items()):
            if not _pid_alive(lease.pid):
                del self._leases[lease_id]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
