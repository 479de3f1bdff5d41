"""ONNX Runtime sessions for the embedded engines: fast when a call runs alone, lean in a crowd."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
    """

    def __init__(self, model: str | Path | bytes, threads: int) -> None:
        self.threads = max(threads, 1)
        model = str(model) if isinstance(model, Path) else model
        self.fast = _session(model, self.threads)
        self.lean = _session(model, 1) if self.threads > 1 else self.fast

    def pick(self, crowded: bool) -> Any:
        """The session for one call: `lean` when other calls run or wait beside it."""
        return self.lean if crowded else self.fast


def _session(model: str | bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
