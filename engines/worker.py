"""Engine workers: a heavy engine's model in a process of its own, loaded once, behind a proxy.

`python -m engines.worker <module:Class> --weights-dir D --scratch S [--idle-exit SECONDS] [--gpu]`
builds the engine class with its usual constructor (`weights_dir`, a CPU-only `GpuAllocator([])`;
with `--gpu`, the GPUs it can see, which the studio narrows to its lease with CUDA_VISIBLE_DEVICES),
and serves requests until it is told to stop, its stdin closes, or `--idle-exit` seconds pass
without a request (it then unloads and exits, freeing the model's memory).

The protocol: JSON lines, one object per line, UTF-8.

- stdin, one request a line: `{"id": int, "op": "load" | "call" | "cancel" | "unload" | "shutdown", ...}`.
  `load`: load the model (answered once it is in memory). `call`: `{"method": name, "args": [...],
  "kwargs": {...}, "seed": int | null}` runs one whitelisted method (`SERVED`: `synthesize` and
  `synthesize_sentence` for TTS engines, the interface's method for dialogue and clone engines);
  `seed` seeds Python's, numpy's and torch's generators first (reproducible runs: tests, benches).
  `cancel`: `{"target": id}` stops the running call at its next chunk (answered at once; the call
  itself then fails with type "CallCancelled"). `unload` frees the model; `shutdown` answers, then exits.
- stdout, one reply or event a line: `{"id", "ok": true, "result": value}` or `{"id", "ok": false,
  "error": message, "type": exception class name}` end a request; before that, events
  `{"id", "event": "chunk", "chunk": value}` (one per AudioChunk `synthesize` yields, as it comes),
  `{"id", "event": "progress", "done": n}` and `{"id", "event": "log", "message": text}`. A worker
  leaving because it was idle says so first: `{"id": null, "event": "exit", "reason": "idle"}`.
- stderr: everything else (the model's own prints go there: the worker points fd 1 at stderr and
  keeps the real stdout for the protocol), streamed line by line to the studio's log.

Values that JSON cannot hold are tagged objects: `{"$path": str}`, `{"$options": {...}}`
(SynthesisOptions), `{"$phoneme": [p, start, end]}`, `{"$chunk": {...}}` (an AudioChunk), and
`{"$npy": path}` for numpy arrays: audio never goes through JSON, it is written with `np.save` to
a `.npy` file in the scratch folder the client gave (`--scratch`) and read back and deleted by the
other side. A file costs one write and one read of the raw float32 bytes (page cache, no text
encoding, no size limit on a line), which is negligible next to a sentence of synthesis, and it
needs nothing but a folder both processes can see (shared memory would save a copy and cost a
lifetime to manage).

The studio side: `WorkerProcess` starts the worker (its own session and process group, stderr
lines to a log callback, the whole tree stopped with `supervisor.ProcessTree`), sends requests and
returns their results; a worker that dies mid-request makes that request raise EngineUnavailable
("the <engine> worker stopped (killed by SIGKILL) while ...; the next request starts a new one"),
and the next request starts a fresh worker (and loads it) without the caller noticing.
`WorkerEngine` is the Engine base for an engine whose model runs in a worker: `status()`,
`voices()` and requirements stay in the studio, `_load` starts the worker, `_unload` stops it, and
each sentence is spoken by the worker; the same class, built with `in_process=True` (which the
worker does), runs the model itself, so there is one code path for the model.
"""

from __future__ import annotations

import argparse
import builtins
import codecs
import contextlib
import gc
import importlib
import json
import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import psutil

from engines.base import (
    AudioChunk,
    Capability,
    Engine,
    EngineUnavailable,
    PhonemeSpan,
    SynthesisOptions,
    UnknownVoice,
)
from engines.gpu import GpuAllocator
from engines.supervisor import ProcessTree

log = logging.getLogger("engines.worker")

_IN_WORKER = "STUDIO_ENGINE_WORKER"  # set in a worker's environment
ROOT = Path(__file__).resolve().parent.parent  # the studio's code: put on the worker's PYTHONPATH
# The methods a worker serves, by capability (StepTrainer and VideoMaker already run their work as
# supervised commands of their own; their arguments are not plain values).
SERVED: dict[Capability, tuple[str, ...]] = {
    Capability.TTS: ("synthesize", "synthesize_sentence"),
    Capability.DIALOGUE: ("synthesize_dialogue",),
    Capability.CLONE: ("clone",),
}


class CallCancelled(RuntimeError):
    """A worker call stopped because it was cancelled."""


class WorkerError(RuntimeError):
    """An exception in the worker whose class has no counterpart here; the message names it."""


# ---- values across the pipe -------------------------------------------------------------------------
def encode(value: Any, scratch: Path) -> Any:
    """`value` as JSON-able data; numpy arrays are saved as .npy files in `scratch`."""
    if isinstance(value, np.ndarray):
        path = scratch / f"{uuid.uuid4().hex}.npy"
        np.save(path, value, allow_pickle=False)
        return {"$npy": str(path)}
    if isinstance(value, AudioChunk):
        return {
            "$chunk": {
                "audio": encode(value.audio, scratch),
                "sample_rate": value.sample_rate,
                "text": value.text,
                "index": value.index,
                "phonemes": [encode(span, scratch) for span in value.phonemes],
            }
        }
    if isinstance(value, PhonemeSpan):
        return {"$phoneme": [value.phoneme, value.start, value.end]}
    if isinstance(value, SynthesisOptions):
        return {"$options": asdict(value)}
    if isinstance(value, Path):
        return {"$path": str(value)}
    if isinstance(value, list | tuple):
        return [encode(item, scratch) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item, scratch) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(value: Any) -> Any:
    """The value `encode` made; an .npy file is read and deleted."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "$npy" in value:
        path = Path(value["$npy"])
        try:
            return np.load(path, allow_pickle=False)
        finally:
            path.unlink(missing_ok=True)
    if "$chunk" in value:
        data = value["$chunk"]
        return AudioChunk(
            decode(data["audio"]),
            data["sample_rate"],
            data["text"],
            data["index"],
            tuple(decode(span) for span in data["phonemes"]),
        )
    if "$phoneme" in value:
        return PhonemeSpan(*value["$phoneme"])
    if "$options" in value:
        return SynthesisOptions(**value["$options"])
    if "$path" in value:
        return Path(value["$path"])
    return {key: decode(item) for key, item in value.items()}


def _exception(kind: str, message: str) -> Exception:
    """The reply's error as an exception of the same class when it is one we know, else WorkerError."""
    known: dict[str, type[Exception]] = {
        cls.__name__: cls for cls in (EngineUnavailable, UnknownVoice, CallCancelled, WorkerError)
    }
    cls = known.get(kind) or getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        with contextlib.suppress(Exception):
            return cls(message)
    return WorkerError(f"{kind}: {message}")


def _exit_words(returncode: int | None) -> str:
    if returncode is None:
        return "its output closed"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


# ---- the studio side ----------------------------------------------------------------------------------
class WorkerProcess:
    """One engine worker seen from the studio: started on first use, restarted after it died or left.

    `target` is "module:Class"; `python` the interpreter that runs it (default: this one; an
    engine with an environment of its own gives that environment's); `env` is added to the
    environment (a lease's CUDA_VISIBLE_DEVICES). `on_log(line)` gets every line the worker prints on
    stderr, on a reader thread. One request runs at a time; `cancel()` may come from any thread.
    """

    def __init__(
        self,
        target: str,
        weights_dir: Path,
        *,
        name: str | None = None,
        python: str | None = None,
        idle_exit_s: float | None = None,
        gpu: bool = False,
        env: dict[str, str] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_idle_exit: Callable[[int], None] | None = None,
        grace_s: float = 5.0,
        cancel_grace_s: float = 3.0,
    ) -> None:
        self.target = target
        self.name = name or target.rpartition(":")[2]
        self.weights_dir = Path(weights_dir).resolve()
        self.python = python or sys.executable
        self.idle_exit_s, self.gpu, self.extra_env = idle_exit_s, gpu, dict(env or {})
        self.on_log = on_log or (lambda line: log.info("%s worker: %s", self.name, line))
        self.on_idle_exit = (
            on_idle_exit  # called (on a reader thread) with the pid of a worker that left idle
        )
        self.grace_s, self.cancel_grace_s = grace_s, cancel_grace_s
        self.scratch = Path(tempfile.mkdtemp(prefix=f"worker-{self.name}-"))
        self.starts = 0  # how many workers were started (a restart adds one)
        self.load_result: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._tree: ProcessTree | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._lock = threading.RLock()  # one request at a time
        self._write_lock = threading.Lock()
        self._next_id = 0
        self._token: threading.Event | None = None  # set: cancel the request in flight

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def busy(self) -> bool:
        """Whether a request is in flight."""
        return self._token is not None

    @property
    def alive(self) -> bool:
        return self._process is not None and not self._exited()

    # ---- requests ----------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the worker (unless it runs) and load the model; what the load answered."""
        with self._lock:
            if not self.alive:
                self._spawn()
            return self.load_result

    def call(self, method: str, *args: Any, seed: int | None = None, **kwargs: Any) -> Any:
        """Run `method(*args, **kwargs)` in the worker and return its result (streamed chunks: a list)."""
        chunks: list[Any] = []
        result = self._request("call", self._call_body(method, args, kwargs, seed), chunks.append)
        return chunks if method == "synthesize" else result

    def stream(self, method: str, *args: Any, seed: int | None = None, **kwargs: Any) -> Iterator[Any]:
        """Run `method` in the worker and yield each chunk it streams as it comes (AudioChunks for
        `synthesize`). Leaving the loop early cancels the call."""
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        done, stop = threading.Event(), threading.Event()

        def run() -> None:
            try:
                self._request(
                    "call",
                    self._call_body(method, args, kwargs, seed),
                    lambda chunk: events.put(("chunk", chunk)),
                    token=stop,
                )
                events.put(("end", None))
            except BaseException as error:
                events.put(("error", error))
            finally:
                done.set()

        # The request runs on a helper thread (which holds the one-request lock) so a consumer
        # that stops early never leaves the worker's reply unread.
        thread = threading.Thread(target=run, name=f"worker-{self.name}-stream", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = events.get()
                if kind == "chunk":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            stop.set()  # a no-op once the call is done
            thread.join()

    def cancel(self) -> None:
        """Stop the request in flight at its next chunk; a call that ignores it for `cancel_grace_s`
        is ended by stopping the worker (the next request starts a new one)."""
        token = self._token
        if token is not None:
            token.set()

    def close_if_gone(self, pid: int) -> bool:
        """Stop everything of the worker `pid` if it has exited and no request has started a new one
        since (checked under the request lock); whether it did."""
        with self._lock:
            if self.pid != pid:
                return False
            deadline = time.monotonic() + self.grace_s
            while not self._exited() and time.monotonic() < deadline:  # it is on its way out
                time.sleep(0.02)
            if not self._exited():
                return False
            self._halt()
            return True

    def unload(self) -> None:
        """Ask the worker to free the model (it stays up); nothing to do when it is not running."""
        with self._lock:
            if self.alive:
                self._request("unload", {}, None, restart=False)

    def stop(self) -> None:
        """Shut the worker down (asked first, then its whole tree stopped) and remove the scratch folder."""
        with self._lock:
            if self.alive:
                with contextlib.suppress(Exception):
                    self._request("shutdown", {}, None, restart=False, wait_s=self.grace_s)
                deadline = time.monotonic() + self.grace_s
                while not self._exited() and time.monotonic() < deadline:  # let it unload and leave
                    time.sleep(0.02)
            self._halt()
            shutil.rmtree(self.scratch, ignore_errors=True)

    def close(self) -> None:
        self.stop()

    # ---- inside ------------------------------------------------------------------------------------
    def _call_body(self, method: str, args: tuple, kwargs: dict, seed: int | None) -> dict[str, Any]:
        return {
            "method": method,
            "args": encode(list(args), self.scratch),
            "kwargs": encode(kwargs, self.scratch),
            "seed": seed,
        }

    def _new_id(self) -> int:
        with self._write_lock:
            self._next_id += 1
            return self._next_id

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        data = (json.dumps(message) + "\n").encode()
        with self._write_lock:
            self._process.stdin.write(data)
            self._process.stdin.flush()

    def _request(
        self,
        op: str,
        body: dict[str, Any],
        on_chunk: Callable[[Any], None] | None,
        *,
        restart: bool = True,
        wait_s: float | None = None,
        token: threading.Event | None = None,
    ) -> Any:
        """Send one request and wait for its reply, handing each chunk event to `on_chunk`."""
        with self._lock:
            for attempt in (1, 2):
                if not self.alive:
                    if not restart:
                        self._halt()
                        return None
                    self._spawn()
                try:
                    return self._exchange(op, body, on_chunk, wait_s, token or threading.Event())
                except _IdleExit:
                    # It left before reading the request, so the request never ran: send it again.
                    self._halt()
                    if attempt == 2:
                        raise EngineUnavailable(f"the {self.name} worker keeps exiting as idle") from None
            raise AssertionError("unreachable")

    def _exchange(
        self,
        op: str,
        body: dict[str, Any],
        on_chunk: Callable[[Any], None] | None,
        wait_s: float | None,
        token: threading.Event,
    ) -> Any:
        what = body.get("method", op)
        if token.is_set():
            raise CallCancelled(f"{what} cancelled before it started")
        request_id = self._new_id()
        doing = f"running {what}" if op == "call" else {"load": "loading"}.get(op, op)
        self._token = token
        started = time.monotonic()
        cancel_sent: float | None = None
        try:
            with contextlib.suppress(OSError, ValueError):  # it is gone: its output's end below says how
                self._send({"id": request_id, "op": op, **body})
            while True:
                if token.is_set() and cancel_sent is None:
                    cancel_sent = time.monotonic()
                    with contextlib.suppress(OSError, ValueError):
                        self._send({"id": self._new_id(), "op": "cancel", "target": request_id})
                try:
                    message = self._replies.get(timeout=0.1)
                except queue.Empty:
                    if cancel_sent is not None and time.monotonic() - cancel_sent > self.cancel_grace_s:
                        self._halt()  # it ignores the cancel: stop it, the next request starts a new one
                        raise CallCancelled(f"{what} cancelled (the worker was stopped)") from None
                    if wait_s is not None and time.monotonic() - started > wait_s:
                        raise TimeoutError(
                            f"the {self.name} worker did not answer '{op}' in {wait_s:g} s"
                        ) from None
                    continue
                if message is None:  # its stdout closed: it died (or was stopped)
                    raise self._died(doing)
                if message.get("event") == "exit" and message.get("id") is None:
                    raise _IdleExit
                if message.get("id") != request_id:
                    continue  # a reply to a cancel, or to a request an earlier caller gave up on
                if "event" in message:
                    if message["event"] == "chunk" and on_chunk is not None:
                        on_chunk(decode(message["chunk"]))
                    elif message["event"] == "log":
                        self.on_log(str(message.get("message", "")))
                    continue
                if message.get("ok"):
                    return decode(message.get("result"))
                raise _exception(str(message.get("type", "")), str(message.get("error", "")))
        finally:
            self._token = None

    def _died(self, doing: str) -> EngineUnavailable:
        """Reap the dead worker and say what happened."""
        self._halt()
        returncode = self._process.returncode if self._process else None
        tail = "" if (returncode or 0) < 0 else " ".join(list(self._stderr_tail)[-3:])
        return EngineUnavailable(
            f"the {self.name} worker stopped ({_exit_words(returncode)}) while {doing}"
            + (f" ({tail})" if tail else "")
            + "; the next request starts a new one"
        )

    def _spawn(self) -> None:
        """Start a fresh worker and load the model in it."""
        self._halt()
        for leftover in self.scratch.glob("*.npy"):  # what a dead worker's requests left
            leftover.unlink(missing_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", "engines.worker", self.target, "--weights-dir", str(self.weights_dir)]
        argv += ["--scratch", str(self.scratch)]
        if self.idle_exit_s is not None:
            argv += ["--idle-exit", f"{self.idle_exit_s:g}"]
        if self.gpu:
            argv.append("--gpu")
        env = {**os.environ, **self.extra_env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._replies = queue.Queue()
        self._stderr_tail.clear()
        self._process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own session and group: the studio's is never signalled
        )
        self._tree = ProcessTree(self._process.pid)
        self.starts += 1
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read_replies, args=(self._process.stdout, self._replies), daemon=True
            ),
            threading.Thread(target=self._read_log, args=(self._process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            self.load_result = self._exchange("load", {}, None, None, threading.Event()) or {}
        except BaseException:
            self._halt()
            raise

    def _halt(self) -> None:
        """Stop the worker's whole tree (SIGTERM, then SIGKILL after `grace_s`) and reap it."""
        process, tree = self._process, self._tree
        if process is None or tree is None:
            return
        self._tree = None
        if process.returncode is None:
            tree.stop(self.grace_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        for pipe in (process.stdin,):
            with contextlib.suppress(OSError, ValueError):
                pipe.close() if pipe else None
        for reader in self._readers:
            reader.join(timeout=5)
        self._readers = []

    def _exited(self) -> bool:
        """Whether the worker has exited, without reaping it (its pid and group stay reserved)."""
        process = self._process
        if process is None or process.returncode is not None or self._tree is None:
            return True
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        try:  # killed, but not waitable until its last thread has exited: a zombie is gone already
            return psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def _read_replies(self, pipe: BinaryIO, replies: queue.Queue[dict[str, Any] | None]) -> None:
        try:
            for raw in pipe:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    self._log_line(line)  # not the protocol's: treat it as output
                    continue
                if isinstance(message, dict):
                    replies.put(message)
                    if message.get("event") == "exit" and self.on_idle_exit and self._process:
                        self.on_idle_exit(self._process.pid)
        finally:
            pipe.close()
            replies.put(None)

    def _read_log(self, pipe: BinaryIO) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
                pending += decoder.decode(chunk)
                *complete, pending = pending.replace("\r", "\n").split("\n")
                for line in complete:
                    self._log_line(line)
            self._log_line(pending + decoder.decode(b"", final=True))
        finally:
            pipe.close()

    def _log_line(self, line: str) -> None:
        if not line.strip():
            return
        self._stderr_tail.append(line.rstrip())
        try:
            self.on_log(line.rstrip())
        except Exception:
            log.exception("worker log callback failed")


class _IdleExit(Exception):
    """The worker said it leaves because it was idle."""


# ---- an engine whose model runs in a worker --------------------------------------------------------
# A heavy engine's worker idle this long exits, giving its memory (GBs on a GPU) back; loading again
# takes seconds.
HEAVY_IDLE_EXIT_S = float(os.environ.get("STUDIO_WORKER_IDLE_EXIT_S", 600))


class WorkerEngine(Engine):
    """An engine whose model runs in a worker process; the studio keeps only the cheap parts.

    Subclasses implement `_load_model`, `_unload_model` and `_model_sentence` (or `_model_timed`),
    which run only where the model is: in the worker, where the class is built with
    `in_process=True`. In the studio, `_load` starts the worker (on its environment's interpreter,
    see `engines.environment`; `worker_idle_exit_s`)
    and `_unload` stops it; each sentence `synthesize` speaks (still split, language-tagged and
    queued by `RunQueue` here, so an interactive request waits for one sentence, not a whole text)
    is one `synthesize_sentence` call in the worker. A capability method is written as
    `if self.in_process: <model code>` else `return self.remote("method", ...)`.
    """

    # A worker idle this long exits, freeing its memory, and the engine unloads (its lease ends with
    # it); the next request loads it again. None: the worker stays until unloaded.
    worker_idle_exit_s: float | None = None

    def __init__(self, weights_dir: Path, allocator: GpuAllocator, *, in_process: bool = False) -> None:
        super().__init__(weights_dir, allocator)
        self.in_process = in_process
        self.worker: WorkerProcess | None = None

    def _load(self) -> None:
        if self.in_process:
            self._load_model()
            return
        if os.environ.get(_IN_WORKER):  # never a worker starting workers (a chain of them)
            raise EngineUnavailable(f"engine '{self.info.name}' would start a worker inside a worker")
        gpus = self._lease.gpus if self._lease else ()
        cls = type(self)
        worker = WorkerProcess(
            f"{cls.__module__}:{cls.__qualname__}",
            self.weights_dir,
            name=self.info.name,
            python=self._worker_python(),
            idle_exit_s=self.worker_idle_exit_s,
            gpu=bool(gpus),
            env=self._lease.env if gpus and self._lease else None,
            on_idle_exit=self._worker_left_idle,
        )
        try:
            worker.start()
        except BaseException:
            worker.stop()
            raise
        self.worker = worker

    def _worker_left_idle(self, pid: int) -> None:
        """The worker exited as idle: unload (its lease ends with it) unless a request came meanwhile."""

        def release() -> None:
            worker = self.worker
            if worker is not None and worker.close_if_gone(pid):
                self.unload()

        threading.Thread(target=release, name=f"{self.info.name}-idle-unload", daemon=True).start()

    def _worker_python(self) -> str | None:
        """Its environment's interpreter (None: this one)."""
        environment = self.environment()
        if environment is None:
            return None
        python = environment.python()
        if python is None:
            raise EngineUnavailable(f"{self.info.name}: {environment.problem()}")
        return python

    def _unload(self) -> None:
        if self.in_process:
            self._unload_model()
            gc.collect()  # the model's memory back now, the GPU's cache too
            with contextlib.suppress(ImportError):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            return
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()

    def cancel(self) -> None:
        """Stop the call in flight: at its next chunk, or by stopping the worker after a grace period."""
        if self.worker is not None:
            self.worker.cancel()

    def remote(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` run in the worker (loaded first if need be)."""
        self.ensure_loaded()
        if self.worker is None:
            raise EngineUnavailable(f"engine '{self.info.name}' was unloaded")
        return self.worker.call(method, *args, **kwargs)

    def _synthesize_timed(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...]]:
        if self.in_process:
            return self._model_timed(sentence, voice, options)
        if self.worker is None:
            raise EngineUnavailable(f"engine '{self.info.name}' is not loaded")
        seed = options.extra.get("seed")  # options.extra["seed"]: a reproducible run (as MOSS-TTSD's)
        audio, phonemes = self.worker.call(
            "synthesize_sentence", sentence, voice, options, seed=None if seed is None else int(seed)
        )
        return audio, tuple(phonemes)

    def _synthesize_sentence(self, sentence: str, voice: str, options: SynthesisOptions) -> np.ndarray:
        return self._synthesize_timed(sentence, voice, options)[0]

    # ---- for subclasses: the model, in the worker ----------------------------------------------
    @abstractmethod
    def _load_model(self) -> None:
        """Load the model into this process (the worker)."""

    @abstractmethod
    def _unload_model(self) -> None:
        """Drop every reference to the model so its memory can be freed."""

    def _model_sentence(self, sentence: str, voice: str, options: SynthesisOptions) -> np.ndarray:
        raise EngineUnavailable(f"engine '{self.info.name}' does not synthesize speech")

    def _model_timed(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...]]:
        return self._model_sentence(sentence, voice, options), ()


# ---- the worker side --------------------------------------------------------------------------------
class _Server:
    """The worker's loop: requests from stdin, replies and events to the protocol stream."""

    def __init__(self, engine: Engine, out: Any, scratch: Path, idle_exit_s: float | None) -> None:
        self.engine, self.out, self.scratch, self.idle_exit_s = engine, out, scratch, idle_exit_s
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.write_lock = threading.Lock()
        self.cancelled: set[Any] = set()  # ids of requests cancelled (before or while they run)
        served = {name for cap in engine.info.capabilities for name in SERVED.get(cap, ())}
        self.served = sorted(
            name for name in served if name == "synthesize_sentence" or hasattr(engine, name)
        )

    def emit(self, message: dict[str, Any]) -> None:
        line = json.dumps(message)
        with self.write_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def read(self) -> None:
        """stdin reader thread: cancels act at once, everything else is queued in order."""
        try:
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except ValueError as error:
                    self.emit({"id": None, "ok": False, "error": f"not JSON: {error}", "type": "ValueError"})
                    continue
                if request.get("op") == "cancel":
                    self.cancelled.add(request.get("target"))
                    self.emit({"id": request.get("id"), "ok": True, "result": None})
                else:
                    self.requests.put(request)
        finally:
            self.requests.put(None)  # the studio closed our stdin: leave

    def serve(self) -> int:
        threading.Thread(target=self.read, name="requests", daemon=True).start()
        while True:
            try:
                request = self.requests.get(timeout=self.idle_exit_s)
            except queue.Empty:
                log.info("idle for %g s: exiting", self.idle_exit_s)
                self.emit({"id": None, "event": "exit", "reason": "idle"})
                self.engine.unload()
                return 0
            if request is None:
                self.engine.unload()
                return 0
            request_id, op = request.get("id"), request.get("op")
            try:
                result = self.handle(request)
                self.emit({"id": request_id, "ok": True, "result": encode(result, self.scratch)})
            except Exception as error:
                if not isinstance(error, CallCancelled | EngineUnavailable | UnknownVoice | ValueError):
                    log.exception("%s failed", op)
                self.emit({"id": request_id, "ok": False, "error": str(error), "type": type(error).__name__})
            finally:
                self.cancelled.discard(request_id)
            if op == "shutdown":
                self.engine.unload()
                return 0

    def handle(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "load":
            started = time.monotonic()
            self.engine.ensure_loaded()
            return {"pid": os.getpid(), "device": self.engine.device, "seconds": time.monotonic() - started}
        if op == "unload":
            self.engine.unload()
            return None
        if op == "shutdown":
            return None
        if op != "call":
            raise ValueError(f"unknown op {op!r}: load, call, cancel, unload or shutdown")
        method = request.get("method")
        if method not in self.served:
            raise ValueError(f"method {method!r} is not served; this worker serves {', '.join(self.served)}")
        args, kwargs = decode(request.get("args", [])), decode(request.get("kwargs", {}))
        if request.get("id") in self.cancelled:
            raise CallCancelled(f"{method} cancelled before it started")
        if request.get("seed") is not None:
            _seed(int(request["seed"]))
        self.engine.ensure_loaded()
        if method == "synthesize":
            return self.synthesize(request["id"], *args, **kwargs)
        if method == "synthesize_sentence":
            with self.engine._runs:
                audio, phonemes = self.engine._synthesize_timed(*args, **kwargs)
            return [np.asarray(audio, dtype=np.float32), list(phonemes)]
        return getattr(self.engine, method)(*args, **kwargs)

    def synthesize(self, request_id: int, *args: Any, **kwargs: Any) -> dict[str, int]:
        count = 0
        chunks = self.engine.synthesize(*args, **kwargs)
        try:
            while request_id not in self.cancelled:  # checked between chunks
                chunk = next(chunks, None)
                if chunk is None:
                    return {"chunks": count}
                self.emit({"id": request_id, "event": "chunk", "chunk": encode(chunk, self.scratch)})
                count += 1
                self.emit({"id": request_id, "event": "progress", "done": count})
            raise CallCancelled(f"synthesize cancelled after {count} chunks")
        finally:
            chunks.close()


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _engine_class(target: str) -> type[Engine]:
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise SystemExit(f"{target} is not an Engine class (module:Class)")
    return cls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engines.worker",
        description="Serve one engine over stdio JSON lines (see the module doc).",
    )
    parser.add_argument("target", help="the engine class, module:Class")
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument(
        "--scratch", type=Path, default=None, help="folder for .npy audio (default: a temp one)"
    )
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds idle")
    parser.add_argument("--gpu", action="store_true", help="use the GPUs this process can see")
    args = parser.parse_args(argv)
    os.environ[_IN_WORKER] = args.target

    # The protocol keeps the real stdout; anything else written to fd 1 (prints, C libraries) goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="worker-"))
    scratch.mkdir(parents=True, exist_ok=True)
    cls = _engine_class(args.target)
    allocator = GpuAllocator(None if args.gpu else [])
    engine = cls(args.weights_dir, allocator, in_process=True) if issubclass(cls, WorkerEngine) else None
    engine = engine or cls(args.weights_dir, allocator)
    return _Server(engine, out, scratch, args.idle_exit).serve()


if __name__ == "__main__":
    # Run as `engines.worker`, not `__main__`, so engine modules that import it share its classes.
    from engines.worker import main as _main

    sys.exit(_main())
