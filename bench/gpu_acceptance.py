"""GPU acceptance run: the studio's GPU paths on one machine, tiny random weights, no internet; one table.

`bench/gpu_acceptance.sh [--dry-run] [--upstream DIR] [--out FILE]` runs, each as one row:

1. inventory: the GPU allocator's view (`probe_cuda_devices`), one exclusive lease taken and released.
2. preflight: the distributed preflight (FSDP2 + Ulysses on a tiny Wan transformer) under torchrun:
   NCCL over every GPU when there are two or more; skipped with the reason on one.
3. kokoro-onnx: the embedded Kokoro (ONNX Runtime; the provider it got is shown) speaking a sentence: RTF.
4. kokoro-torch: the tiny random Kokoro of tests/kokoro_tiny.py on the leased device: RTF.
5. moss-ttsd: the tiny random MOSS-TTSD v1.0 (tests/moss_tiny.py) speaking a 2-speaker script,
   bf16 with sdpa (flash-attn when installed) on a GPU: in its worker when its environment is
   installed, else in-process on this interpreter when it has the packages, else skipped.
6. megatts3: the tiny random MegaTTS3 (tests/megatts3_tiny.py) cloning a clip + latent, likewise.
7. piper-train: Piper's tiny preset for 20 steps (bf16-mixed on a GPU) on a 16-clip dataset.

RTF is seconds of compute per second of audio (below 1 is faster than real time). A row fails with
its error, and the run exits 1 if any did. `--dry-run` runs the same checks on the CPU at their
smallest (gloo preflight on 2 ranks, fp32, 2 training steps): what CI runs to prove the script and
its fixtures work; its numbers say nothing about a GPU. The whole run is meant to fit 8 minutes on
one H100/H200; the upstream code (`../shared/upstream`) must be reachable, or copied and named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import table  # noqa: E402
from engines.base import Engine, SynthesisOptions  # noqa: E402
from engines.gpu import GpuAllocator, probe_cuda_devices  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
DIALOGUE = "[S1] Welcome back to the show.\n[S2] Thanks, it is good to be here.\n"


class Skip(Exception):
    """A check that cannot run here; the message says why."""


@dataclass
class Row:
    check: str
    result: str  # pass, fail or skip
    device: str
    seconds: float
    detail: str


@dataclass
class Run:
    dry: bool
    upstream: Path
    scratch: Path
    allocator: GpuAllocator

    @property
    def gpus(self) -> int:
        return len(self.allocator.devices)


def speak(engine: Engine, text: str) -> int:
    """Samples of `text` spoken with the engine's first voice."""
    return sum(len(chunk.audio) for chunk in engine.synthesize(text, engine.voices()[0].id))


def rtf(seconds: float, samples: int, rate: int) -> str:
    audio = samples / rate
    return f"{audio:.2f} s of audio, RTF {seconds / audio:.3f}" if audio else "no audio"


# ---- the checks ------------------------------------------------------------------------------------
def inventory(run: Run) -> tuple[str, str]:
    names = ", ".join(f"{d.index}: {d.name} ({d.total_mb} MB)" for d in run.allocator.devices)
    with run.allocator.lease("acceptance", exclusive=True) as lease:
        held = len(run.allocator.leases())
        device = lease.device
    assert run.allocator.leases() == [] and held == 1
    return device, f"{run.gpus} GPU(s): {names or 'none'}; one exclusive lease taken and released"


def preflight(run: Run) -> tuple[str, str]:
    from engines.distributed.preflight import run_preflight

    if run.dry:
        ranks, allocator = 2, GpuAllocator([])  # gloo on the CPU
    elif run.gpus >= 2:
        ranks, allocator = run.gpus, run.allocator
    else:
        raise Skip(f"{run.gpus} GPU: NCCL needs two or more (the preflight runs gloo in --dry-run)")
    lines: list[str] = []
    with allocator.lease("acceptance-preflight", ranks if allocator.devices else 1) as lease:
        result = run_preflight(lease, allocator, ranks, run.scratch / "preflight", lines.append)
    if not result.passed:
        raise AssertionError(f"preflight failed: {lines[-3:]}")
    return result.backend, (
        f"{ranks} ranks on {result.backend}: FSDP2 diff {result.fsdp_max_abs_diff:.2g}, "
        f"Ulysses diff {result.ulysses_max_abs_diff:.2g}, job {result.job_seconds:.1f} s"
    )


def kokoro_onnx(run: Run) -> tuple[str, str]:
    from engines.kokoro_onnx import KokoroOnnxEngine

    engine = KokoroOnnxEngine(ROOT / "weights", run.allocator, cache_dir=run.scratch / "kokoro")
    speak(engine, "Warm up.")
    started = time.perf_counter()
    samples = speak(engine, SENTENCE)
    seconds = time.perf_counter() - started
    engine.unload()
    # The studio's ONNX Runtime session takes the CPU provider (the embedded default is CPU-first).
    return "cpu (ONNX Runtime)", rtf(seconds, samples, engine.info.sample_rate)


def kokoro_torch(run: Run) -> tuple[str, str]:
    from engines.kokoro_torch import KokoroTorchEngine
    from tests.kokoro_tiny import build_weights

    weights = build_weights(run.scratch / "kokoro-tiny")
    engine = KokoroTorchEngine(weights, run.allocator, in_process=True)
    engine.ensure_loaded()
    try:
        speak(engine, "Warm up.")
        started = time.perf_counter()
        samples = speak(engine, SENTENCE)
        seconds = time.perf_counter() - started
        return engine.device, rtf(seconds, samples, engine.info.sample_rate)
    finally:
        engine.unload()


def _engine_python(engine: object, modules: tuple[str, ...]) -> tuple[str, bool]:
    """The interpreter a heavy engine runs on here and whether in a worker: its environment when
    installed, else this one (in-process) when it has the modules; Skip otherwise."""
    import importlib.util

    environment = engine.environment()  # type: ignore[attr-defined]
    python = environment.python() if environment else sys.executable
    if python is not None:
        return python, True
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise Skip(f"{environment.problem()}; this interpreter lacks {', '.join(missing)}")
    return sys.executable, False


def _build(python: str, builder: str, *args: str) -> dict:
    out = subprocess.run(
        [python, str(ROOT / "tests" / builder), *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(f"{builder} failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def moss_ttsd(run: Run) -> tuple[str, str]:
    from engines.moss_ttsd import MossTtsdEngine

    weights = run.scratch / "moss"
    probe = MossTtsdEngine(weights, run.allocator)
    python, in_worker = _engine_python(probe, ("transformers", "torchaudio"))
    code = run.upstream / "MOSS-TTS"
    if not code.is_dir():
        raise Skip(f"no upstream code at {code}: pass --upstream")
    built = _build(python, "moss_tiny.py", str(weights), "--frames", "12", "--upstream", str(run.upstream))
    engine = MossTtsdEngine(weights, run.allocator, in_process=not in_worker)
    try:
        started = time.perf_counter()
        audio = engine.synthesize_dialogue(DIALOGUE, options=SynthesisOptions(extra={"seed": 1}))
        seconds = time.perf_counter() - started
        assert abs(len(audio) - built["expected_samples_generation_mode"]) <= 1, len(audio)
        how = "worker" if in_worker else f"in-process, {engine.attention}"
        return engine.device, f"{how}: " + rtf(seconds, len(audio), 24000)
    finally:
        engine.unload()


def megatts3(run: Run) -> tuple[str, str]:
    from engines.megatts3 import MegaTts3Engine

    weights = run.scratch / "megatts3"
    probe = MegaTts3Engine(weights, run.allocator)
    python, in_worker = _engine_python(probe, ("transformers", "tn", "whisper", "pydub"))
    code = run.upstream / "MegaTTS3"
    if not code.is_dir():
        raise Skip(f"no upstream code at {code}: pass --upstream")
    _build(python, "megatts3_tiny.py", str(weights), "--upstream", str(code))
    engine = MegaTts3Engine(weights, run.allocator, in_process=not in_worker)
    try:
        # One diffusion step in the dry run: the same code path, and the length does not depend on it.
        options = SynthesisOptions(extra={"seed": 1, "time_step": 1 if run.dry else 4})
        started = time.perf_counter()
        audio = engine.clone(SENTENCE, weights / "reference.wav", weights / "reference.npy", options)
        seconds = time.perf_counter() - started
        assert len(audio) > 0
        how = "worker" if in_worker else "in-process"
        return engine.device, f"{how}: " + rtf(seconds, len(audio), 24000)
    finally:
        engine.unload()


def piper_train(run: Run) -> tuple[str, str]:
    from studio.services.training import piper_backend
    from tests.test_training_piper import RecordingReport, make_dataset

    ws = make_dataset(run.scratch / "piper")
    steps = 2 if run.dry else 20
    precision = "bf16-mixed" if run.gpus and not run.dry else "32-true"
    params = {"preset": "tiny", "voice_name": "acceptance", "max_steps": steps, "checkpoint_every": steps}
    params["precision"] = precision
    report = RecordingReport()
    with run.allocator.lease("acceptance-piper") as lease:
        started = time.perf_counter()
        result = piper_backend.train(ws, params, report, lease if lease.gpus else None)
        seconds = time.perf_counter() - started
        device = lease.device
    checkpoint = Path(result["checkpoint"]).name
    return device, f"{steps} steps, {precision}: {seconds:.1f} s, {steps / seconds:.2f} steps/s, {checkpoint}"


CHECKS: dict[str, Callable[[Run], tuple[str, str]]] = {
    "inventory": inventory,
    "preflight": preflight,
    "kokoro-onnx": kokoro_onnx,
    "kokoro-torch": kokoro_torch,
    "moss-ttsd": moss_ttsd,
    "megatts3": megatts3,
    "piper-train": piper_train,
}


def check(name: str, run: Run) -> Row:
    started = time.perf_counter()
    try:
        device, detail = CHECKS[name](run)
        result = "pass"
    except Skip as reason:
        device, detail, result = "-", str(reason), "skip"
    except Exception as error:  # a row, not the end of the run
        traceback.print_exc(file=sys.stderr)
        device, detail, result = "-", f"{type(error).__name__}: {error}"[:300], "fail"
    return Row(name, result, device, round(time.perf_counter() - started, 1), detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same checks on the CPU, smallest sizes")
    parser.add_argument("--upstream", type=Path, default=ROOT.parent / "shared" / "upstream")
    parser.add_argument("--only", nargs="*", choices=list(CHECKS), help="run only these checks")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    allocator = GpuAllocator([] if args.dry_run else probe_cuda_devices())
    with tempfile.TemporaryDirectory(prefix="gpu-acceptance-") as scratch:
        run = Run(args.dry_run, args.upstream.resolve(), Path(scratch), allocator)
        rows = []
        for name in args.only or list(CHECKS):
            print(f"[acceptance] {name}...", file=sys.stderr, flush=True)
            rows.append(check(name, run))
            print(
                f"[acceptance] {name}: {rows[-1].result} in {rows[-1].seconds} s", file=sys.stderr, flush=True
            )
    mode = "dry run on the CPU" if args.dry_run else f"{len(allocator.devices)} GPU(s)"
    print(f"GPU acceptance ({mode})")
    cells = [[r.check, r.result, r.device, f"{r.seconds:.1f}", r.detail] for r in rows]
    print(table(["check", "result", "device", "s", "detail"], cells))
    if args.out:
        args.out.write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")
    return 1 if any(r.result == "fail" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
