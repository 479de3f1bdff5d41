"""Worker benchmark: what running KokoroTorchEngine in a worker process costs against in-process.

Builds the tiny random-weight Kokoro model of tests/kokoro_tiny.py in a temporary folder (or uses
the real weights with `--weights-dir`, the folder that holds Kokoro-82M/), then:

1. Cold start: `--starts N` (default 3) times, a fresh worker is started and loaded
   (`WorkerProcess.start`: spawn, imports, model load, the load reply) and stopped -> median s.
2. Round trip: `--sentences N` (default 30) short sentences (5 to 8 words), each spoken once in
   process (the engine built with in_process=True) and once through the worker (the engine as the
   studio builds it), interleaved, after one untimed warm-up each way -> median ms per sentence each
   way, the worker's overhead (ms) and the ratio worker/in-process.

Prints a table on stdout (progress on stderr). Runs on the CPU (`--gpu` is not offered: the studio
side leases the device, the worker inherits it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import log, table  # noqa: E402
from engines.base import SynthesisOptions  # noqa: E402
from engines.gpu import GpuAllocator  # noqa: E402
from engines.kokoro_torch import KokoroTorchEngine  # noqa: E402
from engines.worker import WorkerProcess  # noqa: E402

SENTENCES = [
    "The cat sat on the warm mat.",
    "We walked to the old harbour today.",
    "Please close the window before you leave.",
    "My brother plays the piano every evening.",
    "Seven ducks swam across the quiet pond.",
    "Rain is expected later this afternoon.",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--weights-dir", type=Path, default=None, help="real weights (default: a tiny model)")
    parser.add_argument("--voice", default=None, help="voice id (default: the first in voices/)")
    parser.add_argument("--sentences", type=int, default=30, help="timed sentences each way (default 30)")
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time (default 3)")
    return parser.parse_args()


def cold_starts(weights: Path, count: int) -> list[float]:
    seconds = []
    for i in range(count):
        worker = WorkerProcess("engines.kokoro_torch:KokoroTorchEngine", weights, name="kokoro-torch")
        started = time.perf_counter()
        worker.start()
        seconds.append(time.perf_counter() - started)
        worker.stop()
        log(f"cold start {i + 1}/{count}: {seconds[-1]:.2f} s")
    return seconds


def round_trips(weights: Path, voice: str | None, count: int) -> tuple[list[float], list[float]]:
    local = KokoroTorchEngine(weights, GpuAllocator([]), in_process=True)
    proxy = KokoroTorchEngine(weights, GpuAllocator([]))
    voice = voice or local.voices()[0].id
    options = SynthesisOptions(language="en-us")
    local_ms: list[float] = []
    worker_ms: list[float] = []
    try:
        for engine in (local, proxy):  # load, then one untimed sentence each way
            engine.ensure_loaded()
            engine._synthesize_timed(SENTENCES[0], voice, options)
        for i in range(count):
            sentence = SENTENCES[i % len(SENTENCES)]
            for engine, times in ((local, local_ms), (proxy, worker_ms)):
                with engine._runs:  # what Engine.synthesize holds around each sentence
                    started = time.perf_counter()
                    engine._synthesize_timed(sentence, voice, options)
                    times.append((time.perf_counter() - started) * 1000)
        log(f"{count} sentences each way done")
    finally:
        local.unload()
        proxy.unload()
    return local_ms, worker_ms


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        weights = args.weights_dir
        if weights is None:
            from tests.kokoro_tiny import build_weights

            log("building the tiny random-weight Kokoro model")
            weights = build_weights(Path(tmp))
        starts = cold_starts(weights, args.starts)
        local_ms, worker_ms = round_trips(weights, args.voice, args.sentences)
    local, worker = statistics.median(local_ms), statistics.median(worker_ms)
    model = "tiny random-weight Kokoro" if args.weights_dir is None else str(args.weights_dir)
    print(f"KokoroTorchEngine ({model}), CPU, {args.sentences} short sentences each way")
    rows = [
        ["in-process, per sentence (median)", f"{local:.1f} ms"],
        ["worker, per sentence (median)", f"{worker:.1f} ms"],
        ["worker overhead per request", f"{worker - local:.1f} ms"],
        ["ratio worker / in-process", f"{worker / local:.2f}"],
        [f"worker cold start (median of {len(starts)})", f"{statistics.median(starts):.2f} s"],
    ]
    print(table(["measure", "value"], rows))


if __name__ == "__main__":
    main()
