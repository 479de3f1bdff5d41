"""Task runner: worker threads that run queued tasks, report progress, cancel and recover.

A task kind is a `TaskKind`: a function that does the work given a `TaskContext`, and whether it can
resume after a restart (it finds its own finished pieces in its folder and skips them). The runner
owns the lifecycle: pending -> running -> completed | failed | cancelled, the log, the ETA, and the
release of every GPU lease a task held, whatever way it ended. Each step of that lifecycle is logged as
a `task` event and handed to `listeners` (the metrics).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import background_work
from engines.gpu import GpuAllocator, Lease
from studio.tasks.store import Task, TaskStatus, TaskStore

log = logging.getLogger("studio.tasks")


class TaskCancelled(Exception):
    """Raised inside a task when its cancel was asked for."""


class TaskFailed(Exception):
    """A task's own, user-facing reason for failing (no stack trace is shown for these)."""


@dataclass(frozen=True)
class TaskKind:
    name: str
    run: Callable[[TaskContext], dict[str, Any] | None]  # returns the task's result
    resumable: bool = False
    steps: tuple[str, ...] = ()


class TaskContext:
    """What a running task sees: its config and folder, and ways to report and to stop."""

    def __init__(self, runner: TaskRunner, task: Task) -> None:
        self._runner = runner
        self.task_id = task.task_id
        self.config = task.config
        self.folder: Path = runner.store.folder(task.task_id)
        self._cancel = runner._cancel_event(task.task_id)
        self._started = time.monotonic()
        self._start_percent: float | None = (
            None  # progress when this run first reported (after a resume: > 0)
        )
        self._last_write = 0.0
        self._last_step: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise TaskCancelled()

    def wait(self, seconds: float) -> None:
        """Sleep that wakes up (and raises) on cancel."""
        if self._cancel.wait(seconds):
            raise TaskCancelled()

    def log(self, message: str) -> None:
        self._runner.store.append_log(self.task_id, message)

    def progress(self, percent: float, step: str | None = None, force: bool = False) -> None:
        """Report progress (0..100); the ETA follows from the rate so far. Cheap to call often:
        writes are throttled unless the step changes."""
        self.check_cancelled()
        now = time.monotonic()
        if not force and step == self._last_step and now - self._last_write < 0.2 and percent < 100:
            return
        self._last_write, self._last_step = now, step
        if self._start_percent is None:
            self._start_percent = percent
        # The rate of this run only: work kept from before a restart took no time now.
        done_now = percent - self._start_percent
        eta = (now - self._started) * (100 - percent) / done_now if done_now > 0 else None
        changes: dict[str, Any] = {"progress": round(min(max(percent, 0.0), 100.0), 2), "eta_seconds": eta}
        if step is not None:
            changes["current_step"] = step
        self._runner.store.update(self.task_id, **changes)

    def set_step_state(self, step: str, state: str) -> None:
        task = self._runner.store.get(self.task_id)
        assert task is not None
        self._runner.store.update(self.task_id, steps=task.steps | {step: state})

    def lease(self, count: int = 1, **kwargs: Any) -> Lease:
        """Lease devices for this task; released automatically when the task ends."""
        return self._runner.allocator.acquire(self.task_id, count, **kwargs)


class TaskRunner:
    def __init__(self, store: TaskStore, allocator: GpuAllocator, workers: int = 1) -> None:
        self.store = store
        self.allocator = allocator
        self.kinds: dict[str, TaskKind] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancels: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"task-worker-{i}", daemon=True) for i in range(workers)
        ]
        self._started = False
        self._stopping = False
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # each gets every task event

    def register(self, kind: TaskKind) -> None:
        self.kinds[kind.name] = kind

    def start(self) -> None:
        """Recover what a previous run left behind, then start the workers."""
        if self._started:
            return
        self._started = True
        self._recover()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop running tasks at their next check: resumable ones go back to pending (they resume on the
        next start), others fail as interrupted. Then end the workers."""
        self._stopping = True
        with self._lock:
            events = list(self._cancels.values())
        for event in events:
            event.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def submit(self, kind: str, task_name: str, config: dict[str, Any], owner: str = "") -> Task:
        if kind not in self.kinds:
            raise KeyError(f"unknown task kind '{kind}'; kinds: {', '.join(self.kinds)}")
        task = self.store.create(kind, task_name, config, owner, list(self.kinds[kind].steps))
        self.store.append_log(task.task_id, f"created ({kind})")
        self._event(task, "submitted")
        self._queue.put(task.task_id)
        return task

    def cancel(self, task_id: str) -> Task:
        task = self._require(task_id)
        if task.status.finished:
            return task
        self._cancel_event(task_id).set()
        if task.status == TaskStatus.PENDING:
            self.store.append_log(task_id, "cancelled before it started")
            task = self.store.update(
                task_id, status=TaskStatus.CANCELLED, finished_at=time.time(), eta_seconds=None
            )
            self._event(task, "cancelled")
            return task
        self.store.append_log(task_id, "cancel requested")
        return task

    def delete(self, task_id: str) -> None:
        self._require(task_id)
        self.cancel(task_id)
        self.store.delete(task_id)

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            task = self._require(task_id)
            if task.status.finished or (deadline is not None and time.monotonic() > deadline):
                return task
            if self._stopping and task.status == TaskStatus.PENDING:
                return task  # paused by the shutdown (or never to start): don't hold the caller's thread
            time.sleep(0.05)

    def queue_position(self, task_id: str) -> int:
        pending = [t.task_id for t in reversed(self.store.list(status=TaskStatus.PENDING))]
        return pending.index(task_id) + 1 if task_id in pending else 0

    # ---- internals -------------------------------------------------------------------------------
    def _require(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise KeyError(f"no task '{task_id}'")
        return task

    def _cancel_event(self, task_id: str) -> threading.Event:
        with self._lock:
            event = self._cancels.setdefault(task_id, threading.Event())
            if self._stopping:  # a task that starts while the runner stops stops at its first check
                event.set()
            return event

    def _event(self, task: Task, action: str, seconds: float | None = None, **fields: Any) -> None:
        """Log one `task` event and hand it to the listeners (a failing listener never stops a task)."""
        event = {"event": "task", "action": action, "task_id": task.task_id, "kind": task.kind}
        event |= {"owner": task.owner, "status": task.status.value, **fields}
        if seconds is not None:
            event["seconds"] = round(seconds, 3)
        level = logging.WARNING if action in ("failed", "interrupted") else logging.INFO
        log.log(level, "task %s %s", task.task_id, action, extra=event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("task event listener failed")

    def _recover(self) -> None:
        for task in self.store.list():
            if task.status == TaskStatus.RUNNING:
                kind = self.kinds.get(task.kind)
                if kind and kind.resumable:
                    self.store.append_log(
                        task.task_id, "server restarted: resuming from the last finished piece"
                    )
                    self._event(self.store.update(task.task_id, status=TaskStatus.PENDING), "resumed")
                    self._queue.put(task.task_id)
                else:
                    self.store.append_log(task.task_id, "server restarted while this task ran: interrupted")
                    task = self.store.update(
                        task.task_id,
                        status=TaskStatus.FAILED,
                        error_message="interrupted by a server restart; create the task again",
                        finished_at=time.time(),
                    )
                    self._event(task, "interrupted")
            elif task.status == TaskStatus.PENDING:
                if task.started_at:  # paused by a shutdown
                    self.store.append_log(
                        task.task_id, "server restarted: resuming from the last finished piece"
                    )
                self._event(task, "resumed" if task.started_at else "requeued")
                self._queue.put(task.task_id)

    def _work(self) -> None:
        background_work.set(True)  # tasks give way to interactive requests on shared engines
        while True:
            task_id = self._queue.get()
            if task_id is None:
                return
            task = self.store.get(task_id)
            if task is None or task.status != TaskStatus.PENDING or self._stopping:
                continue
            try:
                self._run(task)
            except KeyError:
                log.info("task %s was deleted while it ran", task_id)

    def _run(self, task: Task) -> None:
        kind = self.kinds.get(task.kind)
        if kind is None:
            task = self.store.update(
                task.task_id, status=TaskStatus.FAILED, error_message=f"unknown task kind '{task.kind}'"
            )
            self._event(task, "failed", error=task.error_message)
            return
        waited = time.time() - task.created_at
        task = self.store.update(
            task.task_id, status=TaskStatus.RUNNING, started_at=task.started_at or time.time()
        )
        self.store.append_log(task.task_id, "started")
        self._event(task, "started", waited)
        started = time.monotonic()
        context = TaskContext(self, task)
        try:
            result = kind.run(context) or {}
        except TaskCancelled:
            if self._stopping and kind.resumable:
                self.store.append_log(task.task_id, "server shutting down: paused, resumes on the next start")
                task = self.store.update(task.task_id, status=TaskStatus.PENDING)
                self._event(task, "paused", time.monotonic() - started)
            elif self._stopping:
                self.store.append_log(task.task_id, "server shutting down: interrupted")
                task = self.store.update(
                    task.task_id,
                    status=TaskStatus.FAILED,
                    error_message="interrupted by a server shutdown; create the task again",
                    finished_at=time.time(),
                )
                self._event(task, "interrupted", time.monotonic() - started)
            else:
                self.store.append_log(task.task_id, "cancelled")
                task = self.store.update(
                    task.task_id, status=TaskStatus.CANCELLED, finished_at=time.time(), eta_seconds=None
                )
                self._event(task, "cancelled", time.monotonic() - started)
        except Exception as error:
            reason = str(error) or type(error).__name__
            self.store.append_log(task.task_id, f"failed: {reason}")
            if not isinstance(error, TaskFailed):
                self.store.append_log(task.task_id, traceback.format_exc())
            task = self.store.update(
                task.task_id,
                status=TaskStatus.FAILED,
                error_message=reason,
                finished_at=time.time(),
                eta_seconds=None,
            )
            self._event(task, "failed", time.monotonic() - started, error=reason)
        else:
            self.store.append_log(task.task_id, "completed")
            task = self.store.update(
                task.task_id,
                status=TaskStatus.COMPLETED,
                progress=100.0,
                eta_seconds=0.0,
                result=result,
                finished_at=time.time(),
            )
            self._event(task, "completed", time.monotonic() - started)
        finally:
            released = self.allocator.release_owner(task.task_id)
            if released:
                self.store.append_log(task.task_id, f"released {released} device lease(s)")
            with self._lock:
                self._cancels.pop(task.task_id, None)
