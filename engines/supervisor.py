"""The one supervisor for every child process the studio starts: run it, stream it, stop all of it.

`SupervisedProcess(argv, ...).run()` starts the command in a session (and process group) of its
own, so a signal meant for it never reaches the server, and hands each line it prints (stdout and
stderr merged, decoded as UTF-8 with bad bytes replaced, split on \\n and on \\r, which progress bars
redraw with; blank lines dropped) to `on_line`, on the caller's thread. It keeps the last lines for
an error message, polls `cancelled` (a callable or a threading.Event) and the watchdog (`watchdog_s`
without a line or a touch of the `heartbeat` file, or a caller's own `hang` check), and returns an
`Outcome` once the command ended or was stopped: exit status, tail, seconds, cancelled and hung.

Stopping means the whole tree: every process the command started, remembered while it runs
(psutil), even one that moved to a session of its own (torchrun's ranks do) or was orphaned by a
dying parent. Each gets SIGTERM (its process group too), then SIGKILL after `grace_s`. The command's
own process is left unreaped (a zombie) until the tree is stopped, so its pid, which is also its
process group's id, cannot be given to another process meanwhile. However `run()` ends (done,
cancelled, hung, or a callback raising), nothing of the tree is left running.

Recovery after a restart: with `pid_file`, the tree's pids and their creation times are written
there (and rewritten as the tree grows) while it runs, and the file is removed once it is stopped.
A server that died without stopping it leaves the file behind; `stop_orphans(pid_file)` then stops
what still runs of that tree, and nothing else: a pid counts only while its creation time is the
recorded one (pids are reused), and the group is signalled only while it still is that tree's.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

_LINE_END = re.compile(r"[\r\n]")
_SAME_START_S = 0.01  # creation times read back from a PID file are the same process within this
EXIT_DRAIN_S = 2.0  # after the command exits, how long its output may stay open (a stray grandchild)
REFRESH_S = 1.0  # how often the tree is looked at again for new processes


@dataclass(frozen=True)
class Outcome:
    """How a supervised command ended."""

    returncode: int  # its exit status; negative: the signal that ended it
    tail: list[str]  # its last lines (those `tail_filter` kept)
    seconds: float
    cancelled: bool = False  # stopped because `cancelled` turned true
    hung: bool = False  # stopped by the watchdog
    reason: str = ""  # why the watchdog stopped it


class SupervisedProcess:
    """One command, run in its own process group, streamed, and stopped whole.

    `argv`, `cwd` and `env` go to subprocess.Popen (`env` None: this process's environment).
    `on_line(line)` gets every output line; `cancelled` is polled every `poll_s`; `watchdog_s`
    stops the command when neither a line came nor `heartbeat` was touched for that long; `hang`,
    asked with the seconds of silence, returns why the command counts as hung (or None) for
    checks of its own. `tail_lines` lines are kept (those `tail_filter` accepts); `grace_s` is the
    time between SIGTERM and SIGKILL; `pid_file` records the tree for `stop_orphans`.

    The callbacks run on the thread that calls `run()` (or `wait()`); cancel from another thread
    through `cancelled`, not by calling `stop()` there.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        on_line: Callable[[str], None] = lambda line: None,
        cancelled: Callable[[], bool] | threading.Event | None = None,
        watchdog_s: float | None = None,
        heartbeat: Path | None = None,
        hang: Callable[[float], str | None] | None = None,
        grace_s: float = 10.0,
        poll_s: float = 0.2,
        tail_lines: int = 80,
        tail_filter: Callable[[str], bool] = lambda line: True,
        pid_file: Path | None = None,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.cwd, self.env = cwd, env
        self.on_line = on_line
        self._cancelled = cancelled.is_set if isinstance(cancelled, threading.Event) else cancelled
        self.watchdog_s, self.heartbeat, self.hang = watchdog_s, heartbeat, hang
        self.grace_s, self.poll_s = grace_s, poll_s
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.tail_filter = tail_filter
        self.pid_file = pid_file
        self.process: subprocess.Popen[bytes] | None = None
        self.tree: ProcessTree | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._output_done = self._stopped = False
        self._last_output = time.monotonic()
        self._started = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Start the command (OSError when it cannot be: not executable, no such folder)."""
        self._started = self._last_output = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and group: the server's is never signalled
        )
        try:
            self.tree = ProcessTree(self.process.pid, record=self.pid_file)
        except BaseException:  # the PID file cannot be written: stop what was just started
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # its group: the command is not reaped yet
            self.process.wait()
            raise
        self._reader = threading.Thread(target=self._read, name=f"output-{self.process.pid}", daemon=True)
        self._reader.start()

    def run(self) -> Outcome:
        """Start the command and supervise it to its end (see `wait`)."""
        self.start()
        return self.wait()

    def wait(self) -> Outcome:
        """Stream the output until the command ends, is cancelled or hangs; the tree is stopped either way.

        An exception raised by a callback stops the tree and propagates.
        """
        assert self.process is not None and self.tree is not None, "start() first"
        cancelled = hung = False
        reason = ""
        exited_at: float | None = None
        looked = time.monotonic()
        try:
            while True:
                self._deliver(timeout=self.poll_s)
                if self._exited():
                    exited_at = exited_at or time.monotonic()
                    # A stray grandchild may hold the output open: don't wait on it for long.
                    if self._output_done or time.monotonic() - exited_at > EXIT_DRAIN_S:
                        break
                    continue
                if time.monotonic() - looked > REFRESH_S:  # remember new children
                    self.tree.refresh()
                    looked = time.monotonic()
                if self._cancelled and self._cancelled():
                    cancelled = True
                    break
                reason = self._hang_reason() or ""
                if reason:
                    hung = True
                    break
        finally:
            self.stop()
        if not (cancelled or hung):
            self._deliver(timeout=None)  # what it printed just before it ended
        returncode = self.process.returncode
        seconds = time.monotonic() - self._started
        return Outcome(returncode, list(self.tail), seconds, cancelled, hung, reason)

    def stop(self) -> None:
        """Stop every process of the tree (SIGTERM, then SIGKILL after `grace_s`), reap the command,
        finish reading its output and remove the PID file. Safe to call more than once."""
        if self.process is None or self.tree is None or self._stopped:
            return
        self._stopped = True  # once the command is reaped, its pid and group id may belong to another
        self.tree.stop(self.grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self._reader:
            self._reader.join(timeout=5)
        if self.pid_file:
            self.pid_file.unlink(missing_ok=True)

    def silent_for(self) -> float:
        """Seconds since the last line, or since `heartbeat` was last touched if that is more recent."""
        since = time.monotonic() - self._last_output
        if self.heartbeat is not None:
            with contextlib.suppress(OSError):
                since = min(since, time.time() - self.heartbeat.stat().st_mtime)
        return since

    # ---- inside ------------------------------------------------------------------------------------
    def _hang_reason(self) -> str | None:
        silent = self.silent_for()
        if self.hang is not None and (reason := self.hang(silent)):
            return reason
        if self.watchdog_s is not None and silent > self.watchdog_s:
            beat = " and no heartbeat" if self.heartbeat is not None else ""
            return f"no output{beat} for {silent:.0f} s (the watchdog allows {self.watchdog_s:g} s)"
        return None

    def _exited(self) -> bool:
        """Whether the command has exited, without reaping it (its pid and group stay reserved)."""
        assert self.process is not None
        if self.process.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _deliver(self, timeout: float | None) -> None:
        """Hand queued lines to `on_line`: wait up to `timeout` for the first (None: take only what is there)."""
        try:
            line = self._lines.get(timeout=timeout) if timeout is not None else self._lines.get_nowait()
            while True:  # drain what is there before checking anything else
                if line is None:
                    self._output_done = True
                else:
                    self._last_output = time.monotonic()
                    if self.tail_filter(line):
                        self.tail.append(line)
                    self.on_line(line)
                line = self._lines.get_nowait()
        except queue.Empty:
            pass

    def _read(self) -> None:
        """The reader thread: lines split on \\n and \\r, blank ones dropped; None marks the end."""
        assert self.process is not None and self.process.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        fd = self.process.stdout.fileno()
        try:
            while chunk := os.read(fd, 65536):
                pending += decoder.decode(chunk)
                *complete, pending = _LINE_END.split(pending)
                for line in complete:
                    if line.strip():
                        self._lines.put(line.rstrip())
            pending += decoder.decode(b"", final=True)
            if pending.strip():
                self._lines.put(pending.rstrip())
        finally:
            self.process.stdout.close()
            self._lines.put(None)


class ProcessTree:
    """Every process a command started, remembered while they run, so all of them can be stopped.

    A child may start processes in sessions of their own (torchrun's ranks), so one killpg is not
    enough, and a process orphaned by a dying parent can no longer be found from it: the tree is
    looked at again while the command runs (`refresh`). psutil's handles notice a reused pid, so a
    process that ended is never mistaken for a new one. With `record`, the tree is written there
    (pids and creation times) whenever it grows, for `stop_orphans`.
    """

    def __init__(self, pid: int, record: Path | None = None) -> None:
        self.pid = pid  # the root, leader of its own group (start_new_session)
        self.record = record
        self._known: dict[int, psutil.Process] = {}
        self._recorded = 0
        with contextlib.suppress(psutil.Error):
            self._known[pid] = psutil.Process(pid)
        self.refresh()

    def refresh(self) -> None:
        """Add the children (recursively) of every process known to be running."""
        for proc in list(self._known.values()):
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    self._known.update({child.pid: child for child in proc.children(recursive=True)})
        if self.record and len(self._known) != self._recorded:
            _write_record(self.record, self.pid, self._known.values())
            self._recorded = len(self._known)

    def alive(self) -> list[psutil.Process]:
        """The known processes still running, with whatever else runs in the root's group."""
        self.refresh()
        return _running([*self._known.values(), *_members_of(self.pid)])

    def stop(self, grace_s: float) -> None:
        """SIGTERM to every process (and process group) of the tree; SIGKILL to what is left after `grace_s`."""
        terminate(self.alive, {self.pid}, grace_s)


def terminate(
    gather: Callable[[], list[psutil.Process]], groups: Iterable[int], grace_s: float
) -> list[psutil.Process]:
    """Stop the processes `gather()` returns, and the process groups `groups`: SIGTERM, then, after
    `grace_s`, SIGKILL to what `gather()` still finds. Returns the processes it signalled first.
    Nothing is reaped here (a zombie counts as stopped), so a child's exit status stays its parent's."""
    family = gather()
    if not family:
        return []
    _signal_all(family, groups, signal.SIGTERM)
    _wait_gone(family, grace_s)
    leftovers = gather()  # with children started while stopping
    if leftovers:
        _signal_all(leftovers, groups, signal.SIGKILL)
        _wait_gone(leftovers, 5)
    return family


def _running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    running: dict[int, psutil.Process] = {}
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                running.setdefault(proc.pid, proc)
    return list(running.values())


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _running(processes) and time.monotonic() < deadline:
        time.sleep(0.05)


def _members_of(group: int) -> list[psutil.Process]:
    """The processes whose process group or session is `group` (never one of this process's own)."""
    own = {os.getpgrp(), os.getsid(0)}
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            ids = {os.getpgid(proc.pid), os.getsid(proc.pid)}
            if group in ids and not ids & own:
                members.append(proc)
    return members


def _signal_all(processes: list[psutil.Process], groups: Iterable[int], sig: signal.Signals) -> None:
    """`sig` to every group of `groups` and of `processes` (never the server's own), then to each process."""
    targets = set(groups)
    for proc in processes:
        with contextlib.suppress(psutil.Error, OSError):
            if proc.is_running():
                targets.add(os.getpgid(proc.pid))
    for group in targets - {os.getpgrp()}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for proc in processes:  # a process that moved to a group of its own is signalled directly
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


# ---- recovery after a restart -------------------------------------------------------------------------
@dataclass(frozen=True)
class PidRecord:
    """What a PID file says: the root's pid and creation time, and every process seen in its tree."""

    pid: int
    create_time: float | None  # None: a file that holds only a pid (nothing to tell a reused pid by)
    processes: tuple[tuple[int, float], ...] = ()


def _write_record(path: Path, pid: int, processes: Iterable[psutil.Process]) -> None:
    seen = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            seen.append([proc.pid, proc.create_time()])
    root = next((created for known, created in seen if known == pid), None)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"pid": pid, "create_time": root, "processes": seen}))
    partial.replace(path)  # a reader never sees half a file


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in `path` (a bare pid is read too); None when there is none or it is unreadable."""
    try:
        text = path.read_text().strip()
        if text.isdigit():
            return PidRecord(int(text), None)
        data = json.loads(text)
        processes = tuple((int(pid), float(created)) for pid, created in data.get("processes", ()))
        created = data.get("create_time")
        return PidRecord(int(data["pid"]), None if created is None else float(created), processes)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _same(pid: int, create_time: float) -> psutil.Process | None:
    """The process `pid` if it is still the one created at `create_time` (not a reused pid)."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) < _SAME_START_S:
            return proc
    return None


def _survivors(
    record: PidRecord, matches: Callable[[psutil.Process], bool] | None
) -> tuple[list[psutil.Process], set[int]]:
    """What still runs of the recorded tree, and the groups that are still its own."""
    found: list[psutil.Process] = []
    root: psutil.Process | None = None
    with contextlib.suppress(psutil.Error):
        candidate = psutil.Process(record.pid)
        same = record.create_time is None or _same(record.pid, record.create_time) is not None
        # A bare pid proves nothing by itself: it counts only when `matches` recognises the process.
        trusted = matches(candidate) if matches else record.create_time is not None
        if same and trusted:
            root = candidate
    if root is not None:
        found.append(root)
        with contextlib.suppress(psutil.Error):
            found += root.children(recursive=True)
    for pid, created in record.processes:
        if (proc := _same(pid, created)) is not None:
            found.append(proc)
            with contextlib.suppress(psutil.Error):
                found += proc.children(recursive=True)
    # While any process is in the root's group (or session), the kernel does not give its number
    # to a new process: with no process of that pid, the group's members are still the tree's.
    groups = {record.pid} if root is not None or not psutil.pid_exists(record.pid) else set()
    for group in groups:
        found += _members_of(group)
    return _running(found), groups


def stop_orphans(
    pid_file: Path,
    *,
    grace_s: float = 10.0,
    matches: Callable[[psutil.Process], bool] | None = None,
    announce: Callable[[int], None] | None = None,
) -> list[int]:
    """Stop what still runs of the tree recorded in `pid_file` (one a dead server left), then remove the file.

    A recorded pid counts only while its process has the recorded creation time; `matches` is a
    further check of the root (and the only one for a file that holds just a pid). `announce(pid)`
    is called with the root's pid before anything is stopped. Returns the pids it stopped.
    """
    record = read_pid_file(pid_file)
    try:
        if record is None:
            return []
        survivors, groups = _survivors(record, matches)
        if not survivors:
            return []
        if announce:
            announce(record.pid)
        stopped = terminate(lambda: _survivors(record, matches)[0], groups, grace_s)
        return [proc.pid for proc in stopped]
    finally:
        pid_file.unlink(missing_ok=True)
