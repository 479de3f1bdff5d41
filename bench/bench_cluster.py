"""Cluster benchmark: what making speech on Ray cluster nodes (engines/cluster.py) costs and gives.

Starts a local Ray cluster with Ray's own `cluster_utils` (a head node this process attaches to, and
worker nodes offering a `speech` resource), then, with the embedded Kokoro:

1. Dispatch overhead: `--sentences N` (default 20) short sentences, each spoken once in this process
   and once through a `ClusterEngine` with one host on one node, interleaved, after one untimed
   warm-up each way -> median ms per sentence each way and the difference (target <= 50 ms).
2. Throughput: `--requests N` (default 16) short sentences from 4 threads at once, through one host
   on one node, then through two hosts on two nodes -> sentences per second each, and the ratio.
   On one small machine the nodes share its cores, so this shows the spreading, not more cores.

Prints a table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ray.cluster_utils import Cluster  # noqa: E402

from bench.common import log, table  # noqa: E402
from engines.base import Engine, SynthesisOptions  # noqa: E402
from engines.cluster import RayCluster  # noqa: E402
from engines.gpu import GpuAllocator  # noqa: E402
from engines.kokoro_onnx import KokoroOnnxEngine  # noqa: E402

VOICE = "jm_kumo"
SENTENCES = [
    "The cat sat on the warm mat.",
    "We walked to the old harbour today.",
    "Please close the window before you leave.",
    "Seven ducks swam across the quiet pond.",
]
NODE = {"num_cpus": 1, "resources": {"speech": 1}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sentences", type=int, default=20, help="timed sentences each way (default 20)")
    parser.add_argument("--requests", type=int, default=16, help="sentences per throughput run (default 16)")
    return parser.parse_args()


def speak(engine: Engine, sentence: str) -> float:
    """Seconds to speak one sentence."""
    started = time.perf_counter()
    chunks = list(engine.synthesize(sentence, VOICE, SynthesisOptions(language="en-us")))
    assert chunks and len(chunks[0].audio)
    return time.perf_counter() - started


def throughput(engine: Engine, requests: int) -> float:
    """Sentences per second with 4 callers at once."""
    speak(engine, SENTENCES[0])  # every host warm
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: speak(engine, SENTENCES[i % len(SENTENCES)]), range(requests)))
    return requests / (time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    weights = Path(tempfile.mkdtemp(prefix="bench-cluster-weights-"))
    cache = Path(tempfile.mkdtemp(prefix="bench-cluster-cache-"))
    log("starting a local Ray cluster (head + 1 node)")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    link = RayCluster(cluster.address, {"kokoro": {"speech": 1}})
    link.connect()  # before the worker nodes exist: this process attaches to the head
    cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    try:
        local = KokoroOnnxEngine(weights, GpuAllocator([]), cache)
        remote = link.dispatch(
            KokoroOnnxEngine(weights, GpuAllocator([]), cache), weights_dir=weights, cache_dir=cache
        )
        speak(local, SENTENCES[0])
        speak(remote, SENTENCES[0])
        here, there = [], []
        log(f"dispatch: {args.sentences} sentences each way")
        for i in range(args.sentences):
            sentence = SENTENCES[i % len(SENTENCES)]
            here.append(speak(local, sentence))
            there.append(speak(remote, sentence))
        local.unload()
        log(f"throughput: {args.requests} sentences, one node")
        one = throughput(remote, args.requests)
        remote.unload()
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        link.replicas = 2
        spread = link.dispatch(
            KokoroOnnxEngine(weights, GpuAllocator([]), cache), weights_dir=weights, cache_dir=cache
        )
        log(f"throughput: {args.requests} sentences, two nodes")
        two = throughput(spread, args.requests)
        nodes_used = sum(1 for node in link.nodes() if node.sentences)
        spread.unload()
    finally:
        link.disconnect()
        cluster.shutdown()
    in_process, dispatched = statistics.median(here) * 1000, statistics.median(there) * 1000
    print(
        table(
            ["measure", "value"],
            [
                ["in process, per sentence (median)", f"{in_process:.1f} ms"],
                ["on a cluster node, per sentence (median)", f"{dispatched:.1f} ms"],
                ["dispatch overhead per request", f"{dispatched - in_process:.1f} ms (target <= 50)"],
                ["throughput, 1 node (4 callers)", f"{one:.2f} sentences/s"],
                ["throughput, 2 nodes (4 callers)", f"{two:.2f} sentences/s"],
                ["2 nodes / 1 node", f"{two / one:.2f}x ({nodes_used} nodes made speech)"],
            ],
        )
    )


if __name__ == "__main__":
    main()
