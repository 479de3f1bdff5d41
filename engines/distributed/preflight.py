"""Distributed preflight: can this machine run a sharded, sequence-parallel video transformer?

Before a multi-GPU video job (MultiTalk on Wan2.1 shards its DiT with FSDP and splits attention
with Ulysses) ties up GPUs for many minutes, this job checks the same machinery in seconds, with a
tiny random-weight diffusers `WanTransformer3DModel` (2 layers, 8 heads x 8 dims):

1. the process group comes up (NCCL on CUDA, gloo on the CPU);
2. every rank builds the same model from the same seed;
3. FSDP2 (`fully_shard` on a 1-D device mesh) shards it, one forward on the same inputs runs, and
   the result is compared with the unsharded copy computed locally (it must match);
4. Ulysses attention (`ulysses.py`) runs on q/k/v split along the sequence and is compared with
   single-process SDPA on the whole sequence;
5. rank 0 writes `preflight.json` (world size, backend, differences, seconds) and prints one
   `PREFLIGHT PASS` / `PREFLIGHT FAIL` line; a failed check exits 1.

Each rank writes `rank<N>.json` (its pid, device) when it starts and touches the launcher's
heartbeat file after every step. `--crash-rank K` and `--hang-rank K` make rank K raise, or sleep
forever without a word, right after step 1: they show that failures and hangs are caught here.

Run by torchrun as `python -m engines.distributed.preflight --out DIR`; `run_preflight()` launches
it on a lease through `TorchrunLauncher` and returns its result. The module imports torch and
diffusers only inside the job, so importing it in the server is cheap.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.gpu import GpuAllocator, Lease
from engines.launcher import HEARTBEAT_ENV, LaunchError, TorchrunLauncher, validate_parallel

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[2]  # the repository: `engines` imports from here
MODULE = "engines.distributed.preflight"
RESULT_FILE = "preflight.json"
STEPS = 5
HEADS = 8  # splits across 1, 2, 4 or 8 ranks
HEAD_DIM = 8
TOLERANCE = 1e-5
PREFLIGHT_MEMORY_MB = 2048  # per GPU: a CUDA context and a model of a few hundred kB
TINY_WAN = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": HEADS,
    "attention_head_dim": HEAD_DIM,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 16,
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 32,
}


@dataclass(frozen=True)
class PreflightResult:
    """What the preflight job found (from its `preflight.json`) and how long it took."""

    passed: bool
    world_size: int
    backend: str
    device: str
    fsdp_max_abs_diff: float
    ulysses_max_abs_diff: float
    sharded_fraction: float  # parameters held by one rank / all parameters (about 1 / world size)
    job_seconds: float  # rank 0's time inside the job (process group to result)
    wall_seconds: float  # torchrun's start to its end, imports included
    result_file: Path


def run_preflight(
    lease: Lease,
    allocator: GpuAllocator,
    nproc: int,
    out_dir: Path,
    log: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
    *,
    launcher: TorchrunLauncher | None = None,
    crash_rank: int | None = None,
    hang_rank: int | None = None,
    tolerance: float = TOLERANCE,
) -> PreflightResult:
    """Run the preflight on `nproc` ranks of `lease` and return what it found.

    ValueError when the layout cannot run on the lease (checked before launching); the launcher's
    LaunchError / LaunchHung / LaunchCancelled when the job fails, hangs or is cancelled (a failed
    check is a failed job: its message carries the PREFLIGHT FAIL line).
    """
    validate_parallel(
        world_size=nproc,
        lease=lease,
        allocator=allocator,
        num_heads=HEADS,
        ulysses=nproc,
        memory_mb=PREFLIGHT_MEMORY_MB,
        max_cpu_procs=(launcher or TorchrunLauncher()).max_cpu_procs,
    )
    for name, rank in (("crash_rank", crash_rank), ("hang_rank", hang_rank)):
        if rank is not None and not 0 <= rank < nproc:
            raise ValueError(f"{name} must be a rank between 0 and {nproc - 1}; got {rank}")
    launcher = launcher or TorchrunLauncher()
    args = [MODULE, "--out", str(out_dir), "--tolerance", repr(tolerance)]
    if crash_rank is not None:
        args += ["--crash-rank", str(crash_rank)]
    if hang_rank is not None:
        args += ["--hang-rank", str(hang_rank)]
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    launched = launcher.run(
        lease,
        nproc,
        args,
        module=True,
        output_dir=out_dir,
        log=log,
        cancelled=cancelled,
        cwd=ROOT,
        env={"PYTHONPATH": pythonpath},
    )
    result_file = out_dir / RESULT_FILE
    if not result_file.is_file():
        raise LaunchError(f"the preflight ended without writing {result_file}")
    data = json.loads(result_file.read_text(encoding="utf-8"))
    return PreflightResult(
        passed=bool(data["passed"]),
        world_size=int(data["world_size"]),
        backend=str(data["backend"]),
        device=str(data["device"]),
        fsdp_max_abs_diff=float(data["fsdp_max_abs_diff"]),
        ulysses_max_abs_diff=float(data["ulysses_max_abs_diff"]),
        sharded_fraction=float(data["sharded_fraction"]),
        job_seconds=float(data["seconds"]),
        wall_seconds=launched.seconds,
        result_file=result_file,
    )


# ---- inside the job (one process per rank) -------------------------------------------------------
def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Distributed preflight (run by torchrun).")
    parser.add_argument("--out", type=Path, required=True, help="folder for preflight.json and rank<N>.json")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest allowed abs difference")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="collective timeout")
    parser.add_argument("--crash-rank", type=int, default=None, help="test: this rank raises after step 1")
    parser.add_argument("--hang-rank", type=int, default=None, help="test: this rank sleeps forever, silent")
    return parser.parse_args(argv)


def _heartbeat() -> None:
    path = os.environ.get(HEARTBEAT_ENV)
    if path:
        Path(path).touch()


def _step(rank: int, number: int, text: str) -> None:
    _heartbeat()
    if rank == 0:
        print(f"preflight step {number}/{STEPS}: {text}", flush=True)


def _max_over_ranks(value: float, device: torch.device) -> float:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def check_fsdp(seed: int, device: torch.device, world: int) -> tuple[float, float]:
    """Max |FSDP2-sharded forward - unsharded forward| on this rank, and the share of parameters it holds."""
    import torch
    from diffusers import WanTransformer3DModel
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(seed)  # the same random weights on every rank
    model = WanTransformer3DModel(**TINY_WAN).to(device).eval()
    reference = copy.deepcopy(model)
    total = sum(p.numel() for p in model.parameters())
    mesh = init_device_mesh(device.type, (world,))
    for block in model.blocks:  # one all-gather per block, as a real 14B model is sharded
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    local = sum(p.to_local().numel() for p in model.parameters())  # DTensor shards after fully_shard

    inputs = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(1, TINY_WAN["in_channels"], 5, 8, 8, generator=inputs).to(device)
    text = torch.randn(1, 6, TINY_WAN["text_dim"], generator=inputs).to(device)
    timestep = torch.tensor([500], device=device)
    with torch.no_grad():
        sharded = model(latents, timestep, text, return_dict=False)[0]
        full = reference(latents, timestep, text, return_dict=False)[0]
    return float((sharded - full).abs().max().item()), local / total


def check_ulysses(seed: int, device: torch.device, rank: int, world: int) -> float:
    """Max |Ulysses attention on this rank's slice - the same slice of SDPA on the whole sequence|."""
    import torch
    import torch.nn.functional as F

    from engines.distributed.ulysses import ulysses_attention

    generator = torch.Generator().manual_seed(seed + 2)
    seq = 16 * world
    q, k, v = (torch.randn(1, HEADS, seq, HEAD_DIM, generator=generator).to(device) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v)
    part = slice(rank * seq // world, (rank + 1) * seq // world)
    with torch.no_grad():
        local = ulysses_attention(
            q[:, :, part].contiguous(), k[:, :, part].contiguous(), v[:, :, part].contiguous()
        )
    return float((local - full[:, :, part]).abs().max().item())


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    args = _parse(argv)
    _heartbeat()  # alive: torch is imported
    started = time.perf_counter()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(device)
        # Exact float32 on both sides of each comparison: TF32 would add its own rounding.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "pid": os.getpid(), "device": str(device), "backend": backend})
    )
    dist.init_process_group(
        backend, timeout=timedelta(seconds=args.timeout_s), device_id=device if cuda else None
    )
    world = dist.get_world_size()
    _step(rank, 1, f"process group up ({backend}, {world} ranks, {device.type})")
    if rank == args.crash_rank:
        raise RuntimeError(f"preflight: rank {rank} crashed on purpose (--crash-rank {rank})")
    if rank == args.hang_rank:
        while True:  # silent: no output, no heartbeat
            time.sleep(3600)

    fsdp_diff, fraction = check_fsdp(args.seed, device, world)
    _step(rank, 2, f"FSDP2 forward of a {TINY_WAN['num_layers']}-layer Wan transformer done")
    fsdp_diff = _max_over_ranks(fsdp_diff, device)
    _step(rank, 3, f"FSDP2 vs unsharded: max abs diff {fsdp_diff:.3g}")
    ulysses_diff = _max_over_ranks(check_ulysses(args.seed, device, rank, world), device)
    _step(rank, 4, f"Ulysses attention vs full SDPA: max abs diff {ulysses_diff:.3g}")

    passed = fsdp_diff <= args.tolerance and ulysses_diff <= args.tolerance
    seconds = time.perf_counter() - started
    if rank == 0:
        result: dict[str, Any] = {
            "passed": passed,
            "world_size": world,
            "backend": backend,
            "device": device.type,
            "fsdp_max_abs_diff": fsdp_diff,
            "ulysses_max_abs_diff": ulysses_diff,
            "tolerance": args.tolerance,
            "sharded_fraction": fraction,
            "seconds": round(seconds, 3),
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_WAN.items()},
            "torch": torch.__version__,
        }
        (args.out / RESULT_FILE).write_text(json.dumps(result, indent=2))
        _step(rank, 5, f"result written to {args.out / RESULT_FILE}")
        verdict = "PREFLIGHT PASS" if passed else "PREFLIGHT FAIL"
        print(
            f"{verdict}: {world} ranks on {backend}; FSDP2 diff {fsdp_diff:.3g}, Ulysses diff "
            f"{ulysses_diff:.3g} (tolerance {args.tolerance:g}); {seconds:.1f} s",
            flush=True,
        )
    # Without this barrier some runs abort at exit (a rank tears the group down while another still uses it).
    dist.barrier()
    dist.destroy_process_group()
    return 0 if passed else 1


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written: skip the interpreter's teardown, where gloo's threads can still abort the
    # process on a busy machine ("terminate called without an active exception", seen with 2 test
    # processes on 2 cores) and turn a passed rank into a failed one.
    os._exit(status)
