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

Long single calls (a voice fit: minutes of trying Kokoro styles) run on a node through
`RayCluster.run`: a `JobHost` actor builds the object there and runs the call, its progress polled
back twice a second; cancelling kills the host, and a lost node runs the call again on another.

The node's Python must have the studio's requirements (a node runs `ray start` from the studio's
environment); the `engines` and `studio` packages travel with the studio's Ray job (`py_modules`),
and the weights, trained-voices and cache folders are read at the same paths on every node (a
shared mount on a real cluster, or each node's own copy).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
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
STUDIO_PACKAGE = ENGINES_PACKAGE.parent / "studio"


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

    def ready(self) -> str:
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


class JobHost:
    """A Ray actor on one node that builds one object there (`module:factory` called with `kwargs`)
    and runs one long call of it, whose progress is read while it runs (the actor is threaded)."""

    def __init__(self, factory: str, kwargs: dict[str, Any]) -> None:
        import ray

        module, name = factory.split(":")
        self.target = getattr(importlib.import_module(module), name)(**kwargs)
        self.node = ray.get_runtime_context().get_node_id()
        self.report: tuple[Any, ...] = ()

    def ready(self) -> str:
        return self.node

    def run(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str]:
        """`target.method(*args, progress=..., **kwargs)` and the node's id; each progress report is
        kept for `progress()`."""

        def progress(*report: Any) -> None:
            self.report = report

        return getattr(self.target, method)(*args, progress=progress, **kwargs), self.node

    def progress(self) -> tuple[Any, ...]:
        """The last report, its lists copied (the call goes on appending to them meanwhile)."""
        return tuple(list(part) if isinstance(part, list) else part for part in self.report)


@dataclass
class NodeReport:
    id: str
    alive: bool
    address: str
    resources: dict[str, float]
    engines: list[str]  # the engines (and long calls: "voice-fit") with a host on it now
    sentences: int  # sentences it made for this studio since the studio started
    jobs: int  # long calls (voice fits) it finished for this studio


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
        self.jobs: Counter[str] = Counter()  # node id -> long calls finished there
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
                # The engines' code and the studio's (a node fits voices with it), to every node.
                runtime_env={"py_modules": [str(ENGINES_PACKAGE), str(STUDIO_PACKAGE)]},
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
            counts, jobs = dict(self.sentences), dict(self.jobs)
        return [
            NodeReport(
                id=node["NodeID"],
                alive=bool(node["Alive"]),
                address=node.get("NodeManagerAddress", ""),
                resources={k: v for k, v in node.get("Resources", {}).items() if not k.startswith("node:")},
                engines=sorted(set(hosted.get(node["NodeID"], []))),
                sentences=counts.get(node["NodeID"], 0),
                jobs=jobs.get(node["NodeID"], 0),
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

    def place(self, label: str, actor: type, *args: Any, max_concurrency: int = 1) -> Any:
        """An `actor(*args)` placed by Ray where one CPU and `label`'s custom resources (an engine's
        name, or "voice-fit") are free, once its `ready()` answered (listed on its node as `label`);
        EngineUnavailable when no live node offers them, or none takes it in time."""
        import ray

        needs = self.resources.get(label, {})
        wanted = ", ".join(f"{amount:g} {name}" for name, amount in ({"CPU": 1.0} | needs).items())
        if not self.can_host({"CPU": 1.0} | needs):
            raise EngineUnavailable(f"{label}: no Ray node offers what it needs ({wanted})")
        options = {"num_cpus": 1, "resources": needs, "max_restarts": 0, "max_concurrency": max_concurrency}
        host = ray.remote(actor).options(**options).remote(*args)
        started = time.monotonic()
        try:
            node = ray.get(host.ready.remote(), timeout=self.call_timeout_s)
        except Exception as error:
            ray.kill(host, no_restart=True)
            raise EngineUnavailable(
                f"{label}: no Ray node could host it ({wanted}): {type(error).__name__}: {error}"[:500]
            ) from error
        with self._lock:
            self.hosts.setdefault(label, {})[host._actor_id.hex()] = node
        log.info("%s: host on node %s, ready in %.1f s", label, node[:8], time.monotonic() - started)
        return host

    def drop(self, label: str, host: Any) -> None:
        """Kill a host (if its node is not gone with it already) and forget it."""
        import ray

        with self._lock:
            self.hosts.get(label, {}).pop(host._actor_id.hex(), None)
        with contextlib.suppress(Exception):
            ray.kill(host, no_restart=True)

    def run(
        self,
        label: str,
        build: tuple[str, dict[str, Any]],
        call: tuple[str, tuple[Any, ...], dict[str, Any]],
        on_progress: Callable[..., None] | None = None,
    ) -> Any:
        """`factory(**kwargs).method(*args, progress=..., **kwargs)` (`build`, `call`) on a node, placed
        as `place` does; what it returns. `on_progress` gets each progress report here, also repeated
        twice a second, so that a cancel raised there ends the call at once (its host is killed). A
        node lost mid-call: the call runs again from the start on another, up to three times."""
        import ray

        method, args, kwargs = call
        for _ in range(3):
            host = self.place(label, JobHost, *build, max_concurrency=2)
            try:
                ref = host.run.remote(method, args, kwargs)
                while True:
                    finished = bool(ray.wait([ref], timeout=0.5)[0])
                    report = ray.get(host.progress.remote(), timeout=self.call_timeout_s)
                    if on_progress and report:
                        on_progress(*report)
                    if finished:
                        break
                result, node = result_of(ref)
            except lost_node() as error:
                log.warning("%s: host lost (%s); the call runs again on another node", label, error)
                continue
            finally:
                self.drop(label, host)
            with self._lock:
                self.jobs[node] += 1
            return result
        raise EngineUnavailable(f"{label}: three cluster hosts in a row were lost on one call")

    def _made(self, node: str) -> None:
        with self._lock:
            self.sentences[node] += 1


class ClusterEngine(Engine):
    """An engine answered here (voices, checks, status, cache key) and run on cluster nodes: each
    sentence is one call to an idle `EngineHost` actor, made again on a new host when its node is lost."""

    def __init__(self, local: Engine, cluster: RayCluster, node_kwargs: dict[str, Any]) -> None:
        self.local = local  # runs nothing here: answers voices, checks and status
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
        style = getattr(self.local, "extra_styles", lambda voice: None)(voice)
        options = replace(options, quick_start=False)
        host = self._slots.get()  # the RunQueue lets in no more callers than there are slots
        try:
            for _ in range(3):
                host = host or self._new_host()
                try:
                    audio, phonemes, words, node = self._call(host, sentence, voice, options, style)
                except lost_node() as error:
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

        ref = host.speak.remote(sentence, voice, options, style)
        self._in_flight.add(ref)
        try:
            return result_of(ref, self.cluster.call_timeout_s)
        finally:
            self._in_flight.discard(ref)

    def _new_host(self) -> Any:
        cls = type(self.local)
        factory = f"{cls.__module__}:{cls.__qualname__}"
        return self.cluster.place(self.info.name, EngineHost, factory, self.node_kwargs)

    def _drop(self, host: Any) -> None:
        self.cluster.drop(self.info.name, host)


@functools.cache
def lost_node() -> tuple[type[BaseException], ...]:
    """What a call raises when its host's node is gone or stopped answering (imported when first
    needed: without a cluster, ray is never imported)."""
    from ray.exceptions import GetTimeoutError, NodeDiedError, ObjectLostError, RayActorError

    return (RayActorError, NodeDiedError, ObjectLostError, GetTimeoutError)


def result_of(ref: Any, timeout: float | None = None) -> Any:
    """`ray.get(ref)`, an error raised on the node re-raised as itself (Ray wraps it with the node's
    whole traceback in its message, which would become the task's or the request's reason)."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as error:
        if isinstance(error.cause, Exception):
            raise error.cause from None
        raise
