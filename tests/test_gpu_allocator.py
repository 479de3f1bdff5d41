"""GPU allocator: leases, exclusivity, memory booking, release on failure, CPU fallback.

The device inventory is given explicitly (as `probe_cuda_devices` would report it), so the leasing
logic is tested on any machine; the probe itself is checked against torch on this machine.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import torch

from engines.gpu import AllocationError, GpuAllocator, GpuDevice, Lease, probe_cuda_devices


def two_gpus() -> GpuAllocator:
    return GpuAllocator([GpuDevice(0, "A", 24_000, 24_000), GpuDevice(1, "B", 80_000, 80_000)])


def test_probe_matches_torch() -> None:
    assert len(probe_cuda_devices()) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_cpu_only_machine_leases_the_cpu_or_says_a_gpu_is_needed() -> None:
    allocator = GpuAllocator([])
    lease = allocator.acquire("job")
    assert lease.device == "cpu" and lease.env == {"CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(AllocationError, match="needs a CUDA GPU"):
        allocator.acquire("video", allow_cpu=False)


def test_exclusive_leases_get_whole_devices_and_their_env() -> None:
    allocator = two_gpus()
    lease = allocator.acquire("train", 2, exclusive=True)
    assert lease.gpus == (0, 1) and lease.env == {"CUDA_VISIBLE_DEVICES": "0,1"} and lease.device == "cuda:0"
    with pytest.raises(AllocationError, match="held by train"):
        allocator.acquire("other", 1)
    allocator.release(lease)
    assert allocator.acquire("other", 1).gpus == (1,)  # the device with most room


def test_shared_leases_book_memory_until_the_device_is_full() -> None:
    allocator = GpuAllocator([GpuDevice(0, "A", 10_000, 10_000)])
    first = allocator.acquire("tts", memory_mb=6_000)
    allocator.acquire("asr", memory_mb=4_000)
    with pytest.raises(AllocationError):
        allocator.acquire("more", memory_mb=1_000)
    allocator.release(first)
    assert allocator.acquire("more", memory_mb=1_000).gpus == (0,)
    with pytest.raises(AllocationError, match="held by"):
        allocator.acquire("video", exclusive=True)


def test_impossible_requests_fail_at_once_with_the_reason() -> None:
    allocator = two_gpus()
    with pytest.raises(AllocationError, match="3 GPUs asked for, this machine has 2"):
        allocator.acquire("big", 3)
    with pytest.raises(AllocationError, match="100000 MB per GPU"):
        allocator.acquire("huge", 1, memory_mb=100_000)


def test_context_manager_releases_when_the_job_raises() -> None:
    allocator = two_gpus()
    with pytest.raises(RuntimeError), allocator.lease("crashy", 2, exclusive=True):
        raise RuntimeError("job died")
    assert allocator.leases() == []


def test_waiting_lease_is_granted_when_another_job_releases() -> None:
    allocator = GpuAllocator([GpuDevice(0, "A", 10_000, 10_000)])
    held = allocator.acquire("first", exclusive=True)
    threading.Timer(0.3, allocator.release, [held]).start()
    started = time.monotonic()
    lease = allocator.acquire("second", exclusive=True, timeout=5)
    assert lease.owner == "second" and 0.2 < time.monotonic() - started < 3


def test_release_owner_frees_everything_a_task_held() -> None:
    allocator = two_gpus()
    allocator.acquire("task-1", 1, exclusive=True)
    allocator.acquire("task-1", 1, exclusive=True)
    assert allocator.release_owner("task-1") == 2
    assert allocator.acquire("task-2", 2, exclusive=True).gpus == (0, 1)


def test_leases_of_a_dead_process_are_reclaimed() -> None:
    allocator = GpuAllocator([GpuDevice(0, "A", 10_000, 10_000)])
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    allocator._grant(Lease("orphan", "worker", (0,), True, 0, pid=child.pid or 0))
    assert allocator.acquire("next", exclusive=True).gpus == (0,)
