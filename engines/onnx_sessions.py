"""ONNX Runtime sessions for the embedded engines: fast when a call runs alone, lean in a crowd."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from engines.memory import return_freed_memory


class AdaptiveSessions:
    """Two sessions of one model; each call takes the one that suits how busy the engine is.

    `fast` spreads a call over every core: the lowest latency for a request that runs alone. `lean`
    runs each call on its caller's thread only, so calls running at once get a core each: the most
    speech per CPU second when requests crowd in. Measured on 2 cores with Kokoro int8 (15 s rounds,
    5 English sentences): alone, a 2-thread call is ~40% faster than a 1-thread one (2.5 against 1.5
    s of audio per second); with 4 requesters, 1-thread calls two at a time made 2.9-3.2 s of audio
    per second against 2.4-2.6 for 2-thread calls one at a time (and 2.5 for 2-thread calls two at a
    time). Both sessions have the memory arena off (it kept ~230 MB per session for no measured
    speed) and thread spinning off (busy-waiting threads burn CPU a crowded machine needs).

    A session holds its own copy of the weights (~105 MB for Kokoro), so the lean one is made on the
    first crowded call and dropped once no crowded call has come for `lean_idle_s`: an idle studio
    keeps one. `model` in memory (bytes) cannot be read again, so its lean session is made at once.
    """

    def __init__(self, model: str | Path | bytes, threads: int, lean_idle_s: float = 30.0) -> None:
        self.threads = max(threads, 1)
        self.lean_idle_s = lean_idle_s
        self._model = str(model) if isinstance(model, Path) else model
        self.fast = _session(self._model, self.threads)
        self._lean: Any = None
        self._lean_used = 0.0
        self._lock = threading.Lock()
        self._drop_timer: threading.Timer | None = None
        if isinstance(self._model, bytes) and self.threads > 1:
            self._lean, self._model = _session(self._model, 1), b""  # kept: nothing to remake it from

    def pick(self, crowded: bool) -> Any:
        """The session for one call: `lean` when other calls run or wait beside it."""
        if not crowded or self.threads == 1:
            return self.fast
        with self._lock:
            if self._lean is None:
                self._lean = _session(self._model, 1)
            self._lean_used = time.monotonic()
            if self._drop_timer is None and self._model:
                self._arm(self.lean_idle_s)
            return self._lean

    def close(self) -> None:
        """Stop the idle timer (the engine unloads; the sessions go with this object)."""
        with self._lock:
            if self._drop_timer is not None:
                self._drop_timer.cancel()
                self._drop_timer = None

    def _arm(self, seconds: float) -> None:
        self._drop_timer = threading.Timer(seconds, self._drop_when_quiet)
        self._drop_timer.daemon = True
        self._drop_timer.start()

    def _drop_when_quiet(self) -> None:
        with self._lock:
            quiet = time.monotonic() - self._lean_used
            if quiet < self.lean_idle_s:
                self._arm(self.lean_idle_s - quiet)
                return
            self._lean = None  # a call still on it keeps it alive until it returns
            self._drop_timer = None
        return_freed_memory()


def _session(model: str | bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
