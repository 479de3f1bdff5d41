"""The process supervisor, on real child processes (small `python -c` scripts): streamed lines, a
failure's tail, cancel and the watchdog stopping a whole tree (grandchildren in sessions of their own
that ignore SIGTERM included), and the PID file that lets a restarted studio stop an orphaned tree
without touching a process that merely got one of its pids."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from engines.supervisor import SupervisedProcess, read_pid_file, stop_orphans

ROOT = Path(__file__).resolve().parent.parent

# A child that starts a grandchild in a session of its own which ignores SIGTERM, prints both pids
# ("pids <child> <grandchild>"), then waits; the grandchild says when it ignores SIGTERM.
GRANDCHILD = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('grandchild ignores SIGTERM', flush=True); time.sleep(120)"
)
FAMILY = textwrap.dedent(
    f"""
    import os, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}], start_new_session=True)
    print("pids", os.getpid(), grandchild.pid, flush=True)
    time.sleep(120)
    """
)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def gone(pid: int) -> bool:
    """Whether `pid` stopped running (a zombie waiting for its parent has stopped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pids_from(lines: list[str]) -> list[int]:
    return [int(word) for line in lines if line.startswith("pids ") for word in line.split()[1:]]


def test_lines_arrive_in_order_merged_and_decoded() -> None:
    lines: list[str] = []
    code = """
        import sys
        for i in range(50):
            stream = sys.stderr if i % 2 else sys.stdout
            print(f"line {i}", file=stream, flush=True)
        sys.stdout.write("progress 1\\rprogress 2\\r\\n\\n   \\n")
        sys.stdout.flush()
        sys.stdout.buffer.write(b"bad \\xff byte\\nlast without newline")
    """
    outcome = SupervisedProcess(py(code), on_line=lines.append).run()
    assert outcome.returncode == 0 and not outcome.cancelled and not outcome.hung
    expected = [f"line {i}" for i in range(50)] + ["progress 1", "progress 2", "bad \ufffd byte"]
    assert lines == [*expected, "last without newline"]  # stdout and stderr in order, blanks dropped
    assert outcome.tail == lines[-80:]


def test_a_failure_returns_its_exit_status_and_last_lines() -> None:
    code = """
        import sys
        for i in range(200):
            print(f"step {i}")
        print("@event not kept in the tail")
        print("ValueError: the reason", file=sys.stderr)
        sys.exit(3)
    """
    outcome = SupervisedProcess(py(code), tail_lines=4, tail_filter=lambda line: "@event" not in line).run()
    assert outcome.returncode == 3
    assert outcome.tail == ["step 197", "step 198", "step 199", "ValueError: the reason"]
    assert not outcome.cancelled and not outcome.hung and outcome.seconds > 0


def test_cancel_stops_the_child_and_its_grandchild() -> None:
    lines: list[str] = []
    cancel, cancelled_at = threading.Event(), []

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "grandchild ignores SIGTERM":
            cancelled_at.append(time.monotonic())
            cancel.set()

    job = SupervisedProcess(py(FAMILY), on_line=on_line, cancelled=cancel, grace_s=1.0, poll_s=0.1)
    outcome = job.run()
    stopping = time.monotonic() - cancelled_at[0]
    child, grandchild = pids_from(lines)
    assert outcome.cancelled and not outcome.hung
    assert outcome.returncode == -signal.SIGTERM  # the child took SIGTERM
    assert gone(child) and gone(grandchild)
    assert 1.0 <= stopping < 5, stopping  # the grandchild ignored SIGTERM: SIGKILL after the grace period


def test_a_callback_that_raises_stops_the_tree_too() -> None:
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError, match="the caller failed"):
        SupervisedProcess(py(FAMILY), on_line=on_line, grace_s=1.0).run()
    child, grandchild = pids_from(seen)
    assert gone(child) and gone(grandchild)


def test_the_watchdog_stops_a_silent_child_and_says_it_hung() -> None:
    lines: list[str] = []
    job = SupervisedProcess(
        py(FAMILY), on_line=lines.append, watchdog_s=1.5, grace_s=1.0, poll_s=0.1, pid_file=None
    )
    started = time.monotonic()
    outcome = job.run()
    child, grandchild = pids_from(lines)
    assert outcome.hung and not outcome.cancelled
    assert outcome.reason.startswith("no output for ") and "1.5 s" in outcome.reason
    assert 1.5 <= time.monotonic() - started < 1.5 + 1.0 + 4
    assert gone(child) and gone(grandchild)


def test_a_heartbeat_file_keeps_a_silent_child_alive(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    beat.touch()
    code = f"""
        import os, time
        for _ in range(12):
            time.sleep(0.25)
            os.utime({str(beat)!r})
    """
    outcome = SupervisedProcess(py(code), watchdog_s=1.5, heartbeat=beat, poll_s=0.1).run()
    assert outcome.returncode == 0 and not outcome.hung


def test_a_pid_file_lets_a_restarted_studio_stop_an_orphaned_tree(tmp_path: Path) -> None:
    pid_file, out = tmp_path / "job.pid", tmp_path / "out.txt"
    # A "studio" that runs the family under the supervisor and then dies without stopping it.
    studio_code = f"""
        import sys
        from pathlib import Path
        from engines.supervisor import SupervisedProcess
        out = open({str(out)!r}, "w", buffering=1)
        SupervisedProcess({[sys.executable, "-c", FAMILY]!r}, on_line=lambda l: out.write(l + "\\n"),
                          pid_file=Path({str(pid_file)!r})).run()
    """
    studio = subprocess.Popen(py(studio_code), cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:  # until the tree (child and grandchild) is recorded
        record = read_pid_file(pid_file)
        if record and len(record.processes) >= 2 and out.exists() and pids_from(out.read_text().splitlines()):
            break
        assert time.monotonic() < deadline and studio.poll() is None, "the studio never recorded its child"
        time.sleep(0.1)
    child, grandchild = pids_from(out.read_text().splitlines())
    assert record.pid == child and {pid for pid, _ in record.processes} == {child, grandchild}
    studio.kill()  # the studio dies: the child and the grandchild are orphans now
    studio.wait()
    assert not gone(child) and not gone(grandchild)

    announced: list[int] = []
    started = time.monotonic()
    stopped = stop_orphans(pid_file, grace_s=1.0, announce=announced.append)
    assert {child, grandchild} <= set(stopped) and announced == [child]
    assert time.monotonic() - started < 5
    for pid in (child, grandchild):
        deadline = time.monotonic() + 3  # an orphan's zombie is reaped by init within a moment
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pid), pid
    assert not pid_file.exists()


def test_a_pid_file_never_stops_a_process_that_reused_a_recorded_pid(tmp_path: Path) -> None:
    unrelated = subprocess.Popen(py("import time; time.sleep(60)"), start_new_session=True)
    try:
        created = psutil.Process(unrelated.pid).create_time()
        pid_file = tmp_path / "job.pid"
        # The recorded process started earlier than the one that has its pid now.
        pid_file.write_text(
            json.dumps(
                {
                    "pid": unrelated.pid,
                    "create_time": created - 100,
                    "processes": [[unrelated.pid, created - 100]],
                }
            )
        )
        assert stop_orphans(pid_file, grace_s=1.0) == []
        assert not pid_file.exists()
        pid_file.write_text(str(unrelated.pid))  # a bare pid (an older studio's file), nothing to check it by
        assert stop_orphans(pid_file, grace_s=1.0) == []
        pid_file.write_text(str(unrelated.pid))  # ... unless the caller recognises the process
        assert stop_orphans(pid_file, grace_s=1.0, matches=lambda proc: False) == []
        time.sleep(0.2)
        assert unrelated.poll() is None and not gone(unrelated.pid)
    finally:
        unrelated.kill()
        unrelated.wait()
