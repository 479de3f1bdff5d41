"""Task runner: worker threads that run queued tasks, report progress, cancel and recover.

A task kind is a `TaskKind`: a function that does the work given a `TaskContext`, and whether it can
resume after a restart (it finds its own finished pieces in its folder and skips them). The runner
owns the lifecycle: pending -> running -> completed | failed | cancelled, the log, the ETA, and the
release of every GPU lease a task held, whatever way it ended. Each step of that lifecycle is logged as
a `task` event and handed to `listeners` (the metrics).

A stepwise kind (training) has named steps instead of one function: the owner asks for steps
(`queue_steps`), the runner runs the queued ones in the kind's order, each with its own state
(pending / queued / running / done / skipped / failed / cancelled) and result. A new task is `pending`
(not queued) until steps are asked for; while they run it is `pending`/`running`; when none is left
to run it is `completed`, with `remaining_steps` naming the steps not done or skipped yet (so a
client that polls until `completed` or `failed` after each step, as GPT-SoVITS's does, moves on). A
failed step makes it `failed`; a failed or cancelled step can be asked for again (a training step
resumes from its checkpoint).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.base import background_work
from engines.gpu import GpuAllocator, Lease
from studio.errors import BadInput, Conflict
from studio.tasks.configs import TaskConfig
from studio.tasks.records import FINISHED_STEP_STATES, Task, TaskStatus
from studio.tasks.store import TaskStore

log = logging.getLogger("studio.tasks")


class TaskCancelled(Exception):
    """Raised inside a task when its cancel was asked for."""


class TaskFailed(Exception):
    """A task's own, user-facing reason for failing (no stack trace is shown for these)."""


class StepSkipped(Exception):
    """A step the task's configuration does not use; the message says why (the step shows `skipped`)."""


StepFunction = Callable[["TaskContext", str, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class TaskKind:
    name: str
    run: Callable[[TaskContext], dict[str, Any] | None] | None = None  # returns the task's result
    config: type[TaskConfig] = TaskConfig  # what a task of this kind is asked to do (default: nothing)
    resumable: bool = False
    steps: tuple[str, ...] = ()
    run_step: StepFunction | None = None  # stepwise kinds: (context, step, params) -> the step's result
    # At creation: checks the config against the server (raises the studio's errors) and returns it
    # planned (what it resolved filled in); that is what the task keeps.
    prepare: Callable[[Any], TaskConfig] | None = None
    is_short: Callable[[Any], bool] | None = None  # given the config: the short lane may run it
    # step -> steps it cannot run without: asking for it also asks for those not done or skipped yet
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def stepwise(self) -> bool:
        return self.run_step is not None


CONFIG_NOTES = "config_notes"  # the result's copy of TaskConfig.notes() (see `submit`)


def step_params(config: dict[str, Any], step: str) -> dict[str, Any]:
    """The params a step runs with: the task config's `step_defaults` for it (set at creation, e.g.
    mapped from a client's config), overridden key by key by the params the step was last asked with."""
    defaults = config.get("step_defaults", {}).get(step, {})
    return dict(defaults) | config.get("step_params", {}).get(step, {})


class LaneQueue:
    """Task ids waiting for a worker, oldest first. General workers take any task; short-lane workers
    take only short ones, so a small job never waits behind a long dialogue, a training run or a video."""

    def __init__(self) -> None:
        self._items: deque[tuple[str, bool]] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, task_id: str, short: bool) -> None:
        with self._ready:
            self._items.append((task_id, short))
            self._ready.notify_all()

    def get(self, short_only: bool) -> str | None:
        """The oldest task this worker may take; None once the queue is closed."""
        with self._ready:
            while not self._closed:
                for item in self._items:
                    if item[1] or not short_only:
                        self._items.remove(item)
                        return item[0]
                self._ready.wait()
            return None

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class TaskContext:
    """What a running task sees: its config and folder, and ways to report and to stop."""

    def __init__(self, runner: TaskRunner, task: Task) -> None:
        self._runner = runner
        self.task_id = task.task_id
        self.config = task.config  # as stored (JSON); `request` is the same, typed
        self._config_model = runner.kinds[task.kind].config if task.kind in runner.kinds else TaskConfig
        self.folder: Path = runner.store.folder(task.task_id)
        self._cancel = runner._cancel_event(task.task_id)
        self._started = time.monotonic()
        self._start_percent: float | None = (
            None  # progress when this run first reported (after a resume: > 0)
        )
        self._last_write = 0.0
        self._last_step: str | None = None
        self._step_span = (0.0, 100.0)  # the share of the task's percent the running step fills
        self._step_started = time.monotonic()
        self._phase = (0.0, 100.0)

    @property
    def request(self) -> Any:
        """The task's config as its kind's TaskConfig (planned when the task was created)."""
        return self._config_model.parse(self.config)

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
        """Report progress (0..100, of the current `phase` if one is open); the ETA follows from the
        rate so far. Cheap to call often: writes are throttled unless the step changes."""
        low, high = self._phase
        self._write(low + (high - low) * percent / 100, step, force)

    @contextmanager
    def phase(self, low: float, high: float) -> Iterator[None]:
        """Inside this block, `progress(0..100)` fills `low..high` of the task's percent: a task made of
        parts (speech, then video) hands each part the context as if the part were the whole task."""
        previous = self._phase
        self._phase = (low, high)
        try:
            yield
        finally:
            self._phase = previous

    def _write(self, percent: float, step: str | None, force: bool = False, eta: float | None = None) -> None:
        self.check_cancelled()
        now = time.monotonic()
        if not force and step == self._last_step and now - self._last_write < 0.2 and percent < 100:
            return
        self._last_write, self._last_step = now, step
        if self._start_percent is None:
            self._start_percent = percent
        if eta is None:
            # The rate of this run only: work kept from before a restart took no time now.
            done_now = percent - self._start_percent
            eta = (now - self._started) * (100 - percent) / done_now if done_now > 0 else None
        changes: dict[str, Any] = {"progress": round(min(max(percent, 0.0), 100.0), 2), "eta_seconds": eta}
        if step is not None:
            changes["current_step"] = step
        self._runner.store.update(self.task_id, **changes)

    def step_progress(self, fraction: float) -> None:
        """How far the running step is (0..1): the task's percent moves within the step's share, and the
        ETA is the time left in this step (steps differ too much in speed to extrapolate across them)."""
        fraction = min(max(fraction, 0.0), 1.0)
        low, high = self._step_span
        elapsed = time.monotonic() - self._step_started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        self._write(low + (high - low) * fraction, self._last_step, eta=eta)

    def _begin_step(self, step: str, low: float, high: float) -> None:
        self._step_span = (low, high)
        self._step_started = time.monotonic()
        self._write(low, step, force=True)

    def result_so_far(self) -> dict[str, Any]:
        """The task's stored result now (a stepwise task's earlier steps' results are under "steps")."""
        task = self._runner.store.get(self.task_id)
        return task.result if task else {}

    def lease(self, count: int = 1, **kwargs: Any) -> Lease:
        """Lease devices for this task; released automatically when the task ends."""
        return self._runner.allocator.acquire(self.task_id, count, **kwargs)


class TaskRunner:
    def __init__(
        self, store: TaskStore, allocator: GpuAllocator, workers: int = 1, short_lane_workers: int = 0
    ) -> None:
        self.store = store
        self.allocator = allocator
        self.kinds: dict[str, TaskKind] = {}
        self._queue = LaneQueue()
        self._cancels: dict[str, threading.Event] = {}
        self._active: set[str] = set()  # tasks a worker is running now
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, args=(False,), name=f"task-worker-{i}", daemon=True)
            for i in range(workers)
        ] + [
            threading.Thread(target=self._work, args=(True,), name=f"short-task-worker-{i}", daemon=True)
            for i in range(short_lane_workers)
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
        self._queue.close()
        for thread in self._threads:
            thread.join(timeout)

    def submit(
        self, kind: str, task_name: str, config: TaskConfig | Mapping[str, Any], owner: str = ""
    ) -> Task:
        """Create a task: `config` (the kind's TaskConfig, or a mapping read as one) is validated and
        prepared once, here, so whatever is wrong with it is an error now rather than a failed task.
        A whole-run kind is queued now; a stepwise one waits for `queue_steps`.

        The config's `notes()` (e.g. keys it mapped or ignored) go to the task's result and log."""
        if kind not in self.kinds:
            raise BadInput(f"unknown task kind '{kind}'; kinds: {', '.join(self.kinds)}", "unknown_kind")
        task_kind = self.kinds[kind]
        if type(config) is not task_kind.config:  # a mapping, or a body that adds e.g. `wait`
            fields = set(task_kind.config.model_fields)
            given = config.model_dump(include=fields) if isinstance(config, TaskConfig) else dict(config)
            config = task_kind.config.parse(given)
        typed = config
        if task_kind.prepare is not None:
            typed = task_kind.prepare(typed)
        notes = typed.notes()
        result = {CONFIG_NOTES: notes} if notes else None
        stored = typed.model_dump(mode="json", exclude_none=True)
        task = self.store.create(kind, task_name, stored, owner, list(task_kind.steps), result)
        self.store.append_log(task.task_id, f"created ({kind})")
        for heading, keys in notes.items():
            lines = "; ".join(f"{key}: {what}" for key, what in keys.items())
            self.store.append_log(task.task_id, f"config keys {heading}: {lines}")
        self._event(task, "submitted")
        if not task_kind.stepwise:
            self._enqueue(task)
        return task

    def queue_steps(
        self,
        task_id: str,
        steps: list[str],
        params: dict[str, Any] | None = None,
        per_step: dict[str, dict[str, Any]] | None = None,
    ) -> Task:
        """Ask for steps of a stepwise task; they run in the kind's order after any already queued,
        with the steps they need (`TaskKind.needs`) that are not done yet. `params` (for every step
        asked) or `per_step` (by step name) replace the params a step was last given. The task is
        `pending` (or still `running`) when this returns, never the state before. Raises Conflict
        for a kind without steps (`no_steps`) or a step running now (`step_busy`), BadInput for a step
        the kind does not have (`unknown_step`)."""
        task = self._require(task_id)
        kind = self.kinds.get(task.kind)
        if kind is None or not kind.stepwise:
            raise Conflict(f"task kind '{task.kind}' has no steps: it runs as a whole", "no_steps")
        given = dict(per_step or {}) | (dict.fromkeys(steps, params) if params is not None else {})
        unknown = [step for step in [*steps, *given] if step not in kind.steps]
        if unknown:
            raise BadInput(f"unknown step '{unknown[0]}'; steps: {', '.join(kind.steps)}", "unknown_step")
        with self._lock:
            task = self._require(task_id)
            running = [step for step in steps if task.steps.get(step) == "running"]
            if running:
                raise Conflict(f"step '{running[0]}' is running now; cancel it first or wait", "step_busy")
            settled_or_coming = (*FINISHED_STEP_STATES, "queued", "running")
            needed = [
                need
                for step in steps
                for need in kind.needs.get(step, ())
                if need not in steps and task.steps.get(need) not in settled_or_coming
            ]
            changes: dict[str, Any] = {"steps": task.steps | dict.fromkeys([*needed, *steps], "queued")}
            if given:
                step_params = dict(task.config.get("step_params", {})) | given
                changes["config"] = task.config | {"step_params": step_params}
            idle = task.status != TaskStatus.RUNNING
            if idle:
                changes |= {"status": TaskStatus.PENDING, "error_message": "", "finished_at": None}
            task = self.store.update(task_id, **changes)
            if idle:  # a cancel of an earlier run does not stop this one
                self._cancels.setdefault(task_id, threading.Event()).clear()
        because = f" (and {', '.join(needed)}, which they need)" if needed else ""
        self.store.append_log(task_id, f"queued step(s): {', '.join(steps)}{because}")
        if idle:
            self._enqueue(task)
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
            self._settle_steps(task_id)
            self._event(task, "cancelled")
            return self._require(task_id)
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
        return self.queue_positions().get(task_id, 0)

    def queue_positions(self) -> dict[str, int]:
        """Each waiting task's place in the queue (1: next); tasks not waiting are absent."""
        pending = [t for t in reversed(self.store.list(status=TaskStatus.PENDING)) if self._waits_to_run(t)]
        return {task.task_id: place for place, task in enumerate(pending, 1)}

    # ---- internals -------------------------------------------------------------------------------
    def _waits_to_run(self, task: Task) -> bool:
        """A pending task is in the queue, unless it is a stepwise one between steps."""
        kind = self.kinds.get(task.kind)
        return not (kind and kind.stepwise) or "queued" in task.steps.values()

    def _interrupt(self, task_id: str, by: str, logged: str) -> Task:
        """A task a server restart or shutdown stopped and that cannot resume: failed, saying so."""
        self.store.append_log(task_id, f"{logged}: interrupted")
        return self.store.update(
            task_id,
            status=TaskStatus.FAILED,
            error_message=f"interrupted by a server {by}; create the task again",
            finished_at=time.time(),
        )

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
                    steps = {
                        step: "queued" if state == "running" else state for step, state in task.steps.items()
                    }
                    task = self.store.update(task.task_id, status=TaskStatus.PENDING, steps=steps)
                    self._event(task, "resumed")
                    self._enqueue(task)
                else:
                    task = self._interrupt(task.task_id, "restart", "server restarted while this task ran")
                    self._event(task, "interrupted")
            elif task.status == TaskStatus.PENDING:
                if not self._waits_to_run(task):
                    continue  # a stepwise task between steps: nothing asked for
                if task.started_at:  # paused by a shutdown
                    self.store.append_log(
                        task.task_id, "server restarted: resuming from the last finished piece"
                    )
                self._event(task, "resumed" if task.started_at else "requeued")
                self._enqueue(task)

    def _enqueue(self, task: Task) -> None:
        kind = self.kinds.get(task.kind)
        short = bool(
            kind and kind.is_short and not kind.stepwise and kind.is_short(kind.config.parse(task.config))
        )
        self._queue.put(task.task_id, short)

    def _work(self, short_only: bool) -> None:
        background_work.set(True)  # tasks give way to interactive requests on shared engines
        while True:
            task_id = self._queue.get(short_only)
            if task_id is None:
                return
            with self._lock:  # a task queued twice (steps asked for twice) runs in one worker at a time
                task = self.store.get(task_id)
                if (
                    task is None
                    or task.status != TaskStatus.PENDING
                    or self._stopping
                    or task_id in self._active
                    or not self._waits_to_run(task)
                ):
                    continue
                self._active.add(task_id)
            try:
                self._run(task)
            except KeyError:
                log.info("task %s was deleted while it ran", task_id)
            finally:
                with self._lock:
                    self._active.discard(task_id)
                    again = self.store.get(task_id)
                # Steps asked for while this run was ending were queued for a worker that skipped the
                # task (it was still active here): queue it once more (a second copy is skipped).
                if (
                    again
                    and again.status == TaskStatus.PENDING
                    and self._waits_to_run(again)
                    and not self._stopping
                ):
                    self._enqueue(again)

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
            try:
                if kind.stepwise:
                    remaining = self._run_steps(kind, context)
                else:
                    assert kind.run is not None
                    result = kind.run(context) or {}
            finally:  # before the final status: whoever sees the task finished sees its GPUs free
                self._release_leases(task.task_id)
        except TaskCancelled:
            if self._stopping and kind.resumable:
                self.store.append_log(task.task_id, "server shutting down: paused, resumes on the next start")
                task = self.store.update(task.task_id, status=TaskStatus.PENDING)
                self._event(task, "paused", time.monotonic() - started)
            elif self._stopping:
                task = self._interrupt(task.task_id, "shutdown", "server shutting down")
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
            if kind.stepwise:  # _run_steps set the status (atomically with its last look for queued steps)
                task = self._require(task.task_id)
                if remaining:
                    self.store.append_log(
                        task.task_id, f"waiting for the next step; not done yet: {', '.join(remaining)}"
                    )
                    self._event(task, "steps_done", time.monotonic() - started)
                    return
            else:
                task = self.store.update(
                    task.task_id,
                    status=TaskStatus.COMPLETED,
                    progress=100.0,
                    eta_seconds=0.0,
                    result=result,
                    finished_at=time.time(),
                )
            self.store.append_log(task.task_id, "completed")
            self._event(task, "completed", time.monotonic() - started)
        finally:
            if kind.stepwise:
                self._settle_steps(task.task_id)
            with self._lock:
                self._cancels.pop(task.task_id, None)

    def _run_steps(self, kind: TaskKind, context: TaskContext) -> list[str]:
        """Run the queued steps in the kind's order (steps queued meanwhile too), then set the task
        completed, its progress the share of steps done or skipped, under the lock `queue_steps`
        takes: a step asked for while this run ends is never left queued with no run. Returns the
        steps not done or skipped yet."""
        assert kind.run_step is not None
        while True:
            with self._lock:
                task = self._require(context.task_id)
                queued = [step for step in kind.steps if task.steps.get(step) == "queued"]
                if not queued:
                    self._release_leases(task.task_id)
                    remaining = task.remaining_steps
                    self.store.update(
                        task.task_id,
                        status=TaskStatus.COMPLETED,
                        progress=round(100.0 * (len(kind.steps) - len(remaining)) / len(kind.steps), 2),
                        eta_seconds=None,
                        finished_at=time.time(),
                    )
                    return remaining
                step = queued[0]
                self.store.update(task.task_id, steps=task.steps | {step: "running"})
            index = kind.steps.index(step)
            share = 100.0 / len(kind.steps)
            context._begin_step(step, index * share, (index + 1) * share)
            params = step_params(task.config, step)
            self.store.append_log(task.task_id, f"step {step}: started")
            started = time.monotonic()
            try:
                outcome = kind.run_step(context, step, params) or {}
                state = "done"
            except StepSkipped as reason:
                outcome, state = {"skipped": str(reason)}, "skipped"
            except BaseException:
                paused = self._stopping and kind.resumable  # resumes on the next start
                self._set_step(
                    task.task_id, step, "queued" if paused else "cancelled" if context.cancelled else "failed"
                )
                raise
            seconds = round(time.monotonic() - started, 2)
            verb = f"skipped ({outcome['skipped']})" if state == "skipped" else f"done in {seconds} s"
            self.store.append_log(task.task_id, f"step {step}: {verb}")
            with self._lock:
                task = self._require(context.task_id)
                results = dict(task.result.get("steps", {})) | {step: outcome | {"run_seconds": seconds}}
                self.store.update(
                    task.task_id, steps=task.steps | {step: state}, result=task.result | {"steps": results}
                )

    def _release_leases(self, task_id: str) -> None:
        released = self.allocator.release_owner(task_id)
        if released:
            self.store.append_log(task_id, f"released {released} device lease(s)")

    def _set_step(self, task_id: str, step: str, state: str) -> None:
        with self._lock:
            task = self._require(task_id)
            self.store.update(task_id, steps=task.steps | {step: state})

    def _settle_steps(self, task_id: str) -> None:
        """After a stepwise run failed or was cancelled, the steps still queued go back to pending."""
        with self._lock:
            task = self.store.get(task_id)
            if task is not None and task.status.finished:
                steps = {s: "pending" if state == "queued" else state for s, state in task.steps.items()}
                self.store.update(task_id, steps=steps)
