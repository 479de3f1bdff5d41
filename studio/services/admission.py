"""Admission: a bounded wait per engine, so a saturated server answers "busy, retry in N s" at once
instead of keeping a request waiting for minutes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engines.base import Engine
from studio.errors import Busy


class Admission:
    """Keeps, per engine, how much text it has been given and not yet spoken (its backlog). A new
    request is refused with `Busy` when that backlog, at the engine's measured speed
    (`Engine.queue_seconds`), would keep it waiting longer than `max_wait_s`; Retry-After is when the
    backlog will have drained to the bound. 0 turns the bound off."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._backlog: dict[str, int] = {}  # engine name -> characters admitted and not yet spoken
        self._lock = threading.Lock()

    def waiting_seconds(self, engine: Engine) -> float:
        """The predicted wait for a request arriving now on `engine` (0 until it has spoken once)."""
        with self._lock:
            queued = self._backlog.get(engine.info.name, 0)
        return (engine.queue_seconds(queued) or 0.0) if queued else 0.0

    @contextmanager
    def admitted(self, engine: Engine, characters: int) -> Iterator[Callable[[int], None]]:
        """Hold `characters` on `engine`'s backlog while the request lives (or raise `Busy`); yields
        `spoken(n)`, which takes n characters off as the request's sentences are done."""
        name = engine.info.name
        with self._lock:
            queued = self._backlog.get(name, 0)
            wait = (engine.queue_seconds(queued) or 0.0) if queued else 0.0
            if 0 < self.max_wait_s < wait:
                retry = max(1.0, wait - self.max_wait_s)
                raise Busy(
                    f"{engine.info.display_name} is busy: about {wait:.0f} s of speech is queued ahead "
                    f"(this server waits at most {self.max_wait_s:.0f} s); retry in {retry:.0f} s",
                    retry_after=retry,
                )
            self._backlog[name] = queued + characters
        remaining = characters

        def spoken(count: int) -> None:
            nonlocal remaining
            taken = min(count, remaining)
            remaining -= taken
            self._take(name, taken)

        try:
            yield spoken
        finally:
            self._take(name, remaining)

    def _take(self, name: str, characters: int) -> None:
        with self._lock:
            self._backlog[name] = max(0, self._backlog.get(name, 0) - characters)
