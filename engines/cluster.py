"""Past one machine: engines whose sentences are spoken on the nodes of a Ray cluster.

With `STUDIO_RAY_ADDRESS` set, the studio connects to that cluster (`RayCluster`) and the engines
it names (`STUDIO_RAY_ENGINES`, the embedded Kokoro and Piper by default) are registered as
`ClusterEngine`s: the same engine, its voices and checks answered here, its model loaded and run by
`EngineHost` actors that Ray places on nodes with the resources the engine needs (one CPU, plus any
custom resources `STUDIO_RAY_RESOURCES` gives it). Everything above the engine interface is
unchanged, so a dialogue, audiobook or speech task runs in the studio as before, writes its pieces
(turns, chapters) to the studio's task folder as they finish, and has each sentence made on a node.

A node lost mid-sentence fails that one call: the engine drops the dead host, starts another where
the resources are free, and makes the sentence again there, so a task goes on from its finished
pieces on another node (or fails with the reason when no node can take the engine). No call waits
longer than `call_timeout_s` on a node that stopped answering.

The node's Python must have the studio's requirements (a node runs `ray start` from the studio's
environment); the `engines` package travels with the studio's Ray job (`py_modules`), and the weights
folder and the trained-voices folder are read at the same paths on every node (a shared mount on a
real cluster).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import (
    Engine,
    EngineUnavailable,
    PhonemeSpan,
    Requirement,
    SynthesisOptions,
    VoiceInfo,
    WordSpan,
)
from engines.gpu import GpuAllocator

log = logging.getLogger(__name__)
NAMESPACE = "speech-studio"
ENGINES_PACKAGE = Path(__file__).resolve().parent


class EngineHost:
    """A Ray actor on one node: builds one engine there (CPU only) and speaks sentences with it."""

    def __init__(self, engine_class: str, kwargs: dict[str, Any]) -> None:
        import ray

        module, name = engine_class.split(":")
        cls = getattr(importlib.import_module(module), name)
        self._styles: dict[str, np.ndarray] = {}  # voices defined by the studio (fitted library voices)
        if "extra_styles" in inspect.signature(cls).parameters:
            kwargs = kwargs | {"extra_styles": self._styles.get}
        self.engine: Engine = cls(allocator=GpuAllocator([]), **kwargs)
        self.node = ray.get_runtime_context().get_node_id()

    def load(self) -> str:
        """Load the model; the node's id."""
        self.engine.ensure_loaded()
        return self.node

    def speak(
        self, sentence: str, voice: str, options: SynthesisOptions, style: np.ndarray | None
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...], tuple[WordSpan, ...], str]:
        """One sentence (split and its language set by the studio) and the node that made it."""
        if style is not None:
            self._styles[voice] = style
        audio, phonemes, words = self.engine._synthesize_words(sentence, voice, options)
        return np.asarray(audio, np.float32), phonemes, words, self.node


@dataclass
class NodeReport:
    id: str
    alive: bool
    address: str
    resources: dict[str, float]
    engines: list[str]  # the engines with a host on it now
    sentences: int  # sentences it made for this studio since the studio started


class RayCluster:
    """The studio's link to one Ray cluster: connects once, hosts engines on its nodes, reports them."""

    def __init__(
        self,
        address: str,
        resources: dict[str, dict[str, float]] | None = None,
        replicas: int = 1,
        call_timeout_s: float = 120.0,
    ) -> None:
        self.address = address
        self.resources = resources or {}  # engine name -> custom resources its hosts need
        self.replicas = replicas  # hosts per engine (each one sentence at a time)
        self.call_timeout_s = call_timeout_s
        self.sentences: Counter[str] = Counter()  # node id -> sentences made there
        self.hosts: dict[str, dict[str, str]] = {}  # engine name -> {host actor id: node id}
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Join the cluster as a driver; ConnectionError says which address could not be reached."""
        import ray

        if ray.is_initialized():
            return
        try:
            ray.init(
                address=self.address,
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
                runtime_env={"py_modules": [str(ENGINES_PACKAGE)]},  # the engines' code, to every node
            )
        except Exception as error:
            raise ConnectionError(f"the Ray cluster at {self.address} cannot be reached: {error}") from error

    def disconnect(self) -> None:
        import ray

        ray.shutdown()

    def dispatch(self, engine: Engine, **node_kwargs: Any) -> ClusterEngine:
        """`engine` with its sentences made on cluster nodes by hosts built as
        `type(engine)(allocator=..., **node_kwargs)`."""
        return ClusterEngine(engine, self, node_kwargs)

    def nodes(self) -> list[NodeReport]:
        import ray

        with self._lock:
            hosted: dict[str, list[str]] = {}
            for engine, hosts in self.hosts.items():
                for node in hosts.values():
                    hosted.setdefault(node, []).append(engine)
            counts = dict(self.sentences)
        return [
            NodeReport(
                id=node["NodeID"],
                alive=bool(node["Alive"]),
                address=node.get("NodeManagerAddress", ""),
                resources={k: v for k, v in node.get("Resources", {}).items() if not k.startswith("node:")},
                engines=sorted(set(hosted.get(node["NodeID"], []))),
                sentences=counts.get(node["NodeID"], 0),
            )
            for node in ray.nodes()
        ]

    def can_host(self, needs: dict[str, float]) -> bool:
        """Whether some live node offers `needs` at all (free or not)."""
        import ray

        return any(
            node["Alive"] and all(node.get("Resources", {}).get(k, 0.0) >= v for k, v in needs.items())
            for node in ray.nodes()
        )

    def report(self) -> dict[str, Any]:
        """What /health says of the cluster: its address and each node."""
        return {"address": self.address, "nodes": [vars(node) for node in self.nodes()]}

    def _placed(self, engine: str, host: str, node: str | None) -> None:
        with self._lock:
            hosts = self.hosts.setdefault(engine, {})
            if node is None:
                hosts.pop(host, None)
            else:
                hosts[host] = node

    def _made(self, node: str) -> None:
        with self._lock:
            self.sentences[node] += 1


class ClusterEngine(Engine):
    """An engine answered here (voices, checks, status, cache key) and run on cluster nodes: each
    sentence is one call to an idle `EngineHost` actor, made again on a new host when its node is lost."""

    def __init__(self, local: Engine, cluster: RayCluster, node_kwargs: dict[str, Any]) -> None:
        self.local = local  # runs nothing; voice fitting uses it in this process
        self.info = local.info
        self.takes_phonemes = local.takes_phonemes
        self.cluster = cluster
        self.node_kwargs = node_kwargs
        super().__init__(local.weights_dir, local.allocator)
        self._slots: queue.Queue[Any] = queue.Queue()  # idle hosts; None: a host to place anew
        self._in_flight: set[Any] = set()  # object refs of calls running now

    # ---- answered here, by the engine itself -----------------------------------------------------
    def parallel_runs(self) -> int:
        return self.cluster.replicas

    def requirements(self) -> tuple[Requirement, ...]:
        return self.local.requirements()

    def environment_name(self) -> str | None:
        return self.local.environment_name()

    def placed_problems(self) -> tuple[str, ...]:
        return self.local.placed_problems()

    def cache_key(self, voice: str) -> str | None:
        return self.local.cache_key(voice)

    def voices(self) -> list[VoiceInfo]:
        return self.local.voices()

    def check_voice(self, voice: str) -> None:
        self.local.check_voice(voice)

    @property
    def device(self) -> str:
        return "ray"

    # ---- run on the nodes -------------------------------------------------------------------------
    def _load(self) -> None:
        self.cluster.connect()
        hosts = [self._new_host() for _ in range(self.cluster.replicas)]
        for host in hosts:
            self._slots.put(host)

    def _unload(self) -> None:
        while not self._slots.empty():
            host = self._slots.get_nowait()
            if host is not None:
                self._drop(host)

    def cancel(self) -> None:
        import ray

        for ref in list(self._in_flight):
            ray.cancel(ref)

    def _synthesize_words(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...], tuple[WordSpan, ...]]:
        from ray.exceptions import GetTimeoutError, NodeDiedError, ObjectLostError, RayActorError

        style = getattr(self.local, "extra_styles", lambda voice: None)(voice)
        options = replace(options, quick_start=False)
        host = self._slots.get()  # the RunQueue lets in no more callers than there are slots
        try:
            for _ in range(3):
                host = host or self._new_host()
                try:
                    audio, phonemes, words, node = self._call(host, sentence, voice, options, style)
                except (RayActorError, NodeDiedError, ObjectLostError, GetTimeoutError) as error:
                    log.warning(
                        "%s: host lost (%s); the sentence is made again on another", self.info.name, error
                    )
                    self._drop(host)
                    host = None
                    continue
                self.cluster._made(node)
                return audio, phonemes, words
            raise EngineUnavailable(
                f"{self.info.name}: three cluster hosts in a row were lost on one sentence"
            )
        finally:
            self._slots.put(host)  # None: the next caller places a new host

    def _call(
        self, host: Any, sentence: str, voice: str, options: SynthesisOptions, style: np.ndarray | None
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...], tuple[WordSpan, ...], str]:
        import ray

        ref = host.speak.remote(sentence, voice, options, style)
        self._in_flight.add(ref)
        try:
            return ray.get(ref, timeout=self.cluster.call_timeout_s)
        finally:
            self._in_flight.discard(ref)

    def _new_host(self) -> Any:
        """A host actor placed by Ray where the engine's resources are free, its model loaded;
        EngineUnavailable when no live node offers them, or none takes it in time."""
        import ray

        needs = self.cluster.resources.get(self.info.name, {})
        wanted = ", ".join(f"{amount:g} {name}" for name, amount in ({"CPU": 1.0} | needs).items())
        if not self.cluster.can_host({"CPU": 1.0} | needs):
            raise EngineUnavailable(f"{self.info.name}: no Ray node offers what it needs ({wanted})")
        actor = ray.remote(EngineHost).options(
            num_cpus=1,
            resources=needs,
            max_restarts=0,
        )
        cls = type(self.local)
        host = actor.remote(f"{cls.__module__}:{cls.__qualname__}", self.node_kwargs)
        started = time.monotonic()
        try:
            node = ray.get(host.load.remote(), timeout=self.cluster.call_timeout_s)
        except Exception as error:
            ray.kill(host, no_restart=True)
            raise EngineUnavailable(
                f"{self.info.name}: no Ray node could host it ({wanted}): {type(error).__name__}: {error}"[
                    :500
                ]
            ) from error
        self.cluster._placed(self.info.name, host._actor_id.hex(), node)
        log.info(
            "%s: host on node %s, loaded in %.1f s", self.info.name, node[:8], time.monotonic() - started
        )
        return host

    def _drop(self, host: Any) -> None:
        import ray

        self.cluster._placed(self.info.name, host._actor_id.hex(), None)
        with contextlib.suppress(Exception):  # already gone with its node
            ray.kill(host, no_restart=True)
