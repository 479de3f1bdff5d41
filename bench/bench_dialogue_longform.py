"""Long-form dialogue benchmark: flat memory as scripts grow, and a crash mid-way that redoes no turn.

What it measures, on the embedded engines with the default voices (two speakers: S1 = Kokoro jm_kumo,
S2 = Kokoro jf_alpha), in one run:

1. Memory against length. Dialogue scripts whose audio lasts about 1, 3 and `--minutes` (default 10)
   minutes are generated (alternating [S1]/[S2] turns of 1 to 3 sentences taken in order from a
   70-sentence English conversation, cycled, sized at ~14 characters per second of speech; every
   script opens with the same turn, the longest sentence of all, so the largest single model input
   comes first whatever the length; onnxruntime's CPU arena can still grow after it, as longer
   scripts bring more distinct input shapes: it keeps its high-water mark). Each length
   runs in a FRESH subprocess (this script's `--child` mode) that builds Studio(Settings(data_dir=tmp)),
   starts it, synthesizes one short warm-up sentence per voice, reads its RSS (the baseline: engines
   loaded), submits the "dialogue" task, waits for it (sampling RSS every 0.5 s) and reports its peak
   RSS (getrusage ru_maxrss: the whole process lifetime). growth = peak - baseline. Flat memory means
   growth does not scale with the length of the script; the table shows both, and the verdict
   compares the peaks at the longest and the 1-minute script. Wall time is the task's own
   (started_at -> finished_at: making turns + mixing), RTF = wall / audio seconds.
2. A crash mid-way, at `--restart-minutes` (default 5; the same script as part 1 when equal to
   --minutes): `python app.py --port <free port>` runs on a fresh data dir (rate limit off), the
   script is POSTed to /api/v1/dialogue and GET /api/v1/task/{id} is polled (progress, step, ETA).
   When progress passes `--crash-at` (default 40%) the server is SIGKILLed (a crash, not a clean
   stop); the finished turns (`_turns/NNNNN.json` + `.wav`) are recorded with their mtimes and
   sha256; the server starts again on the same data dir and port and is polled to completion. Checks:
   no kept turn file was rewritten (mtime and content unchanged), the task log says "kept N turn(s)"
   with N = the turns on disk at the crash, the result counts every turn, and dialogue.wav's length
   matches the result's duration. "time lost" = the gap between the last turn finished before the
   crash and the first turn finished after it, less what that turn costs at the pre-crash pace
   (so it holds the work in flight at the crash, the server restart and the engine reload).

Run (about 10 to 20 minutes on 2 busy cores with the defaults; progress goes to stderr):

    PYTHONPATH=. .venv/bin/python bench/bench_dialogue_longform.py [--minutes 10] [--restart-minutes 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))

from bench.common import log  # noqa: E402
from bench.server import SERVER_ENV, Server  # noqa: E402

CHARS_PER_SECOND = 14.0  # sizing estimate for Kokoro's English speech
SHORT_MINUTES = (1.0, 3.0)
WARM_TEXT = "Warming up."
VOICES = {"S1": "jm_kumo", "S2": "jf_alpha"}  # DialogueService.DEFAULT_VOICES; not passed, only shown
FLAT_LIMIT_MB = 50.0  # peak(longest) - peak(1 min) above this counts as growing memory
SAMPLE_S = 0.5  # RSS sampling period inside a child
POLL_S = 1.0  # REST polling period in part 2
PRINT_EVERY_S = 5.0
DURATION_TOLERANCE_S = 0.01

SENTENCES = (
    "Did you manage to find a parking spot this morning?",
    "I had to circle the block three times before anything opened up.",
    "That is exactly why I started taking the bus to work.",
    "The bus is fine until it rains and everyone decides to ride it at once.",
    "Fair enough.",
    "Anyway, have you read the report that came out on Friday?",
    "Only the summary, to be honest, and it raised more questions than it answered.",
    "The numbers for the second quarter looked much better than anyone expected.",
    "Sure, but I wonder how much of that was the holiday season.",
    "Probably a good part of it.",
    "We should ask the finance team before the meeting on Thursday.",
    "I will send them a short note after lunch.",
    "Speaking of lunch, the new place on the corner is surprisingly good.",
    "Is that the one with the long line out the door?",
    "Yes, but it moves quickly, and the soup alone is worth the wait.",
    "I might try it tomorrow if the weather holds.",
    "The forecast says sunshine all week, which would be a nice change.",
    "My garden could certainly use a few dry days.",
    "How are your tomatoes doing this year?",
    "Better than last summer, although the squirrels keep stealing the ripe ones.",
    "You could try a net over the plants.",
    "I did, and somehow they still find a way in.",
    "Clever little creatures, aren't they?",
    "Too clever for my liking.",
    "By the way, my sister is visiting next weekend with her two children.",
    "That sounds lovely, how old are they now?",
    "The older one just started school and the younger one is learning to walk.",
    "They grow up so fast.",
    "We are planning to take them to the science museum on Saturday.",
    "The new exhibit about the ocean floor is wonderful, you should not miss the giant squid.",
    "I will make sure we see it first.",
    "Do you remember the name of the little cafe near the museum entrance?",
    "I think it was called the Blue Kettle, or something very close to that.",
    "Right, they make a great hot chocolate.",
    "Let me check the opening hours before we go.",
    "Good idea, some places close early on weekends.",
    "On a different note, did the printer on the third floor ever get fixed?",
    "Someone from the support desk came by yesterday afternoon and replaced a part.",
    "It printed the first page perfectly and then jammed again on the second.",
    "Typical.",
    "I have started saving everything as a document and reading it on the screen instead.",
    "That is probably better for the trees anyway.",
    "And for my patience.",
    "Have you decided where to go on holiday this year?",
    "We are thinking about a week by the sea, somewhere quiet without too many tourists.",
    "The north coast is beautiful in early autumn, and the hotels are half the price.",
    "I did not know that, thank you.",
    "Just pack a warm jacket, because the evenings get cold once the sun goes down.",
    "Noted.",
    "What about you, any plans of your own?",
    "Mostly staying home and finally finishing the book I started in the spring.",
    "Is it any good?",
    "It starts slowly, but the last few chapters are hard to put down.",
    "Then I will borrow it when you are done.",
    "Deal, as long as you bring it back this time.",
    "That was one time, and I returned it eventually.",
    "Three months later, with a coffee stain on the cover.",
    "I still say the cat did that.",
    "Of course it did.",
    "Shall we go over the agenda for tomorrow before we both forget?",
    "First the budget, then the new hires, and finally the office move.",
    "The office move will take the longest, so maybe we should start with it.",
    "Agreed, people always have strong opinions about where their desks go.",
    "I just want to sit somewhere near a window.",
    "You and everyone else in the building.",
    "Maybe we could draw names out of a hat.",
    "That might be the fairest way, honestly.",
    "Let us write it down and bring it up at the end of the meeting.",
    "Perfect, I think that covers everything for now.",
    "Great, talk to you tomorrow then.",
)
# Every script opens with this turn, longer than any sentence above (see the docstring): the
# largest single model input then comes first in every script, whatever its length.
OPENING = "Welcome back, today we are catching up on parking, lunch, gardens, museums, printers and holidays."
assert len(OPENING) > max(len(s) for s in SENTENCES)


# ---- scripts ---------------------------------------------------------------------------------------
def make_script(minutes: float, seed: int = 7) -> list[tuple[str, str]]:
    """(speaker, text) turns, alternating S1/S2, about `minutes` of speech at CHARS_PER_SECOND."""
    target = minutes * 60 * CHARS_PER_SECOND
    rng = random.Random(seed)
    turns = [("S1", OPENING)]
    size = len(OPENING)
    position = 0
    while size < target:  # the bank reads as a conversation: take it in order, 1 to 3 sentences a turn
        picked = []
        for _ in range(rng.choice((1, 1, 2, 2, 2, 3))):
            picked.append(SENTENCES[position % len(SENTENCES)])
            position += 1
        text = " ".join(picked)
        turns.append(("S2" if turns[-1][0] == "S1" else "S1", text))
        size += len(text)
    return turns


def script_text(turns: list[tuple[str, str]]) -> str:
    return "\n".join(f"[{speaker}] {text}" for speaker, text in turns)


# ---- part 1: one length in a fresh process ---------------------------------------------------------
def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(minutes: float, data_dir: Path, result_path: Path) -> None:
    """Runs in its own process: one dialogue task of `minutes`, with RSS measurements, as JSON."""
    import gc

    from studio.config import Settings
    from studio.core import Studio
    from studio.services.dialogue import DialogueConfig
    from studio.services.speech import SpeechRequest
    from studio.tasks.store import TaskStatus

    started = time.monotonic()
    studio = Studio(Settings(data_dir=data_dir))
    studio.start()
    try:
        for voice in VOICES.values():
            studio.speech.synthesize(SpeechRequest(WARM_TEXT, voice=voice))
        gc.collect()
        load_s = time.monotonic() - started
        baseline, maxrss_at_baseline = rss_mb(), maxrss_mb()
        turns = make_script(minutes)
        config = {"script": script_text(turns)}
        _, planned = studio.dialogue.plan(DialogueConfig.parse(config))
        task = studio.runner.submit("dialogue", f"bench {minutes:g} min", config)
        samples: list[tuple[float, float, float]] = []  # (seconds since submit, progress %, RSS MB)
        submitted = time.monotonic()
        last_print = submitted
        while True:
            current = studio.store.get(task.task_id)
            assert current is not None
            now = time.monotonic()
            samples.append((now - submitted, current.progress, rss_mb()))
            if now - last_print >= 15:
                last_print = now
                log(
                    f"  [{minutes:g} min] {now - submitted:5.0f} s  {current.progress:5.1f}%  "
                    f"{current.current_step:<24}  RSS {samples[-1][2]:.0f} MB"
                )
            if current.status.finished:
                break
            time.sleep(SAMPLE_S)
        if current.status != TaskStatus.COMPLETED:
            raise RuntimeError(f"dialogue task ended {current.status}: {current.error_message}")
        assert current.started_at is not None and current.finished_at is not None
        out = {
            "minutes": minutes,
            "chars": sum(len(text) for _, text in turns),
            "turns": len(planned),
            "load_s": load_s,
            "wall_s": current.finished_at - current.started_at,
            "audio_s": float(current.result["duration"]),
            "baseline_mb": baseline,
            "maxrss_at_baseline_mb": maxrss_at_baseline,
            "peak_mb": maxrss_mb(),
            "samples": samples,
        }
    finally:
        studio.stop()
    result_path.write_text(json.dumps(out), encoding="utf-8")


@dataclass
class LengthResult:
    minutes: float
    chars: int
    turns: int
    load_s: float
    wall_s: float
    audio_s: float
    baseline_mb: float
    maxrss_at_baseline_mb: float
    peak_mb: float
    samples: list[tuple[float, float, float]]

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.baseline_mb

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s

    def rss_at(self, percent: float) -> float:
        """First sampled RSS at or beyond `percent` progress (turns end at 95, mixing is 96..100)."""
        return next((rss for _, p, rss in self.samples if p >= percent), self.samples[-1][2])

    def max_rss(self, low: float, high: float) -> float:
        values = [rss for _, p, rss in self.samples if low <= p < high]
        return max(values) if values else float("nan")


def run_length(minutes: float, tmp: Path) -> LengthResult:
    data_dir = tmp / f"mem-{minutes:g}"
    result_path = tmp / f"mem-{minutes:g}.json"
    env = {**os.environ, **SERVER_ENV, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", f"{minutes:g}"]
    command += ["--data-dir", str(data_dir), "--result", str(result_path)]
    log(f"[memory] {minutes:g} min of audio: fresh process")
    completed = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the {minutes:g}-minute child exited with {completed.returncode}")
    data = json.loads(result_path.read_text(encoding="utf-8"))
    data["samples"] = [tuple(s) for s in data["samples"]]
    result = LengthResult(**data)
    log(
        f"[memory] {minutes:g} min: {result.audio_s / 60:.2f} min of audio in {result.wall_s:.0f} s, "
        f"peak {result.peak_mb:.0f} MB (baseline {result.baseline_mb:.0f} MB)"
    )
    return result


# ---- part 2: a crash mid-way -----------------------------------------------------------------------
@dataclass
class RestartResult:
    minutes: float
    turns: int
    crash_at: float
    progress_at_crash: float = 0.0
    turns_before_crash: int = 0  # turn files on disk when the server died
    turns_kept: int = 0  # from the task log's "kept N turn(s)"
    turns_made_after: int = 0  # from the log's "made M"
    partial_at_crash: list[str] = field(default_factory=list)  # files of the turn in flight
    rewritten: list[str] = field(default_factory=list)  # kept files whose mtime or content changed
    inflight_lost_s: float = 0.0  # kill - last kept turn finished
    restart_s: float = 0.0  # kill -> the new server answers /health
    time_lost_s: float = 0.0
    first_wall_s: float = 0.0  # submit -> kill
    second_wall_s: float = 0.0  # relaunch -> completed
    total_wall_s: float = 0.0  # submit -> completed, restart included
    audio_s: float = 0.0
    wav_s: float = 0.0
    log_excerpt: list[str] = field(default_factory=list)
    poll_lines: list[tuple[bool, str]] = field(default_factory=list)  # (an event, not a poll?, line)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)


def fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def poll_line(elapsed: float, task: dict[str, Any]) -> str:
    eta = task.get("eta_seconds")
    eta_text = f"{eta:6.0f} s" if isinstance(eta, int | float) else "     -  "
    return (
        f"  {elapsed:6.1f} s  {task['status']:<9} {task['progress']:5.1f}%  ETA {eta_text}  "
        f"{task.get('current_step') or ''}"
    )


def run_restart(minutes: float, crash_at: float, tmp: Path) -> RestartResult:
    turns = make_script(minutes)
    result = RestartResult(minutes, len(turns), crash_at)
    data_dir = tmp / "restart"
    lines = result.poll_lines

    def show(line: str, event: bool = False) -> None:
        log(line)
        lines.append((event, line))

    with Server(data_dir, data_dir.parent / f"{data_dir.name}-server.log") as server:
        log(f"[restart] starting the server on {server.url} (data dir {data_dir})")
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
            body = {"script": script_text(turns), "task_name": "bench restart"}
            submitted = time.time()
            response = client.post("/api/v1/dialogue", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"/api/v1/dialogue answered {response.status_code}: {response.text[:500]}")
            task_id = response.json()["task_id"]
            show(f"[restart] task {task_id}: {len(turns)} turns, {minutes:g} min target; polling", True)
            last_print = 0.0
            while True:
                task = client.get(f"/api/v1/task/{task_id}").json()
                now = time.time()
                if task["status"] in ("failed", "cancelled", "completed"):
                    raise RuntimeError(f"the task ended before the crash point: {task}")
                if task["status"] == "running" and task["progress"] >= crash_at:
                    break
                if now - last_print >= PRINT_EVERY_S:
                    last_print = now
                    show(poll_line(now - submitted, task))
                time.sleep(POLL_S)
        server.crash()
        killed = time.time()
        result.first_wall_s = killed - submitted
        result.progress_at_crash = float(task["progress"])
        show(poll_line(killed - submitted, task), True)
        show(f"  {killed - submitted:6.1f} s  SIGKILL to the server (pid {server.pid})", True)

        turns_dir = data_dir / "tasks" / task_id / "_turns"
        kept = sorted(turns_dir.glob("*.json"))
        result.turns_before_crash = len(kept)
        kept_names = {p.stem for p in kept}
        before = {
            p.name: fingerprint(p)
            for stem in kept_names
            for p in (turns_dir / f"{stem}.json", turns_dir / f"{stem}.wav")
        }
        result.partial_at_crash = sorted(p.name for p in turns_dir.iterdir() if p.stem not in kept_names)
        last_kept = max(mtime for mtime, _ in before.values()) / 1e9
        first_kept = min(before[f"{stem}.json"][0] for stem in kept_names) / 1e9
        result.inflight_lost_s = killed - last_kept
        show(
            f"  {time.time() - submitted:6.1f} s  {len(kept)} turn(s) on disk; in flight: "
            f"{', '.join(result.partial_at_crash) or 'nothing written yet'}",
            True,
        )

        log("[restart] starting the server again on the same data dir and port")
        relaunched = time.time()
        server.launch()
        server.wait_ready()
        result.restart_s = time.time() - killed
        show(
            f"  {time.time() - submitted:6.1f} s  server back ({result.restart_s:.1f} s after the kill)", True
        )
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
            last_print = 0.0
            while True:
                task = client.get(f"/api/v1/task/{task_id}").json()
                now = time.time()
                if task["status"] in ("failed", "cancelled", "completed"):
                    show(poll_line(now - submitted, task), True)
                    break
                if now - last_print >= PRINT_EVERY_S:
                    last_print = now
                    show(poll_line(now - submitted, task))
                time.sleep(POLL_S)
            task_log = client.get(f"/api/v1/task/{task_id}/logs").text
        if task["status"] != "completed":
            raise RuntimeError(f"the resumed task ended {task['status']}: {task.get('error_message')}")
        result.total_wall_s = float(task["finished_at"]) - submitted
        result.second_wall_s = float(task["finished_at"]) - relaunched

    # ---- checks -----------------------------------------------------------------------------------
    for name, (mtime, digest) in before.items():
        path = turns_dir / name
        if not path.exists() or fingerprint(path) != (mtime, digest):
            result.rewritten.append(name)
    result.checks.append(
        (
            "no kept turn file rewritten",
            not result.rewritten,
            f"{len(before)} files ({len(kept)} turns), mtime_ns and sha256 compared"
            + (f"; changed: {', '.join(result.rewritten[:5])}" if result.rewritten else ""),
        )
    )
    match = re.search(r"kept (\d+) turn\(s\) made before; made (\d+)", task_log)
    if match:
        result.turns_kept, result.turns_made_after = int(match[1]), int(match[2])
    result.checks.append(
        (
            'log says "kept N turn(s)"',
            bool(match) and result.turns_kept == result.turns_before_crash,
            f"kept {result.turns_kept}, made {result.turns_made_after}; on disk at the crash: "
            f"{result.turns_before_crash}"
            if match
            else "no such line in the task log",
        )
    )
    result.checks.append(
        (
            "every turn in the result",
            task["result"].get("turns") == len(turns)
            and result.turns_kept + result.turns_made_after == len(turns),
            f"result turns {task['result'].get('turns')}, script turns {len(turns)}",
        )
    )
    folder = data_dir / "tasks" / task_id
    info = sf.info(str(folder / "dialogue.wav"))
    result.audio_s = float(task["result"]["duration"])
    result.wav_s = info.frames / info.samplerate
    result.checks.append(
        (
            "dialogue.wav length = result duration",
            abs(result.wav_s - result.audio_s) <= DURATION_TOLERANCE_S,
            f"{result.wav_s:.3f} s vs {result.audio_s:.3f} s (tolerance {DURATION_TOLERANCE_S} s)",
        )
    )
    result.log_excerpt = [
        line
        for line in task_log.splitlines()
        if any(key in line for key in ("restarted", "started", "kept", "completed", "failed"))
    ]

    # time lost: the gap around the crash, less what the first remade turn costs at the pre-crash pace
    after = sorted(
        (p.stat().st_mtime, int(p.stem)) for p in turns_dir.glob("*.json") if p.stem not in kept_names
    )
    if after and len(kept) >= 2:
        first_after, index = after[0]
        paced_chars = sum(len(turns[int(stem)][1]) for stem in kept_names if int(stem) > 0)
        pace = (last_kept - first_kept) / max(paced_chars, 1)  # seconds per character before the crash
        result.time_lost_s = (first_after - last_kept) - pace * len(turns[index][1])
    else:
        result.time_lost_s = float("nan")
    return result


# ---- report ----------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) for cell, w in zip(cells, widths, strict=True))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])


def report_memory(results: list[LengthResult]) -> None:
    print()
    print(
        "Memory against length (each length in a fresh process; baseline = RSS after loading the "
        "engines and one warm-up sentence per voice; peak = ru_maxrss of the whole process):"
    )
    rows = [
        [
            f"{r.minutes:g}",
            f"{r.audio_s / 60:.2f}",
            str(r.turns),
            str(r.chars),
            f"{r.wall_s:.1f}",
            f"{r.rtf:.3f}",
            f"{r.baseline_mb:.0f}",
            f"{r.peak_mb:.0f}",
            f"{r.growth_mb:.0f}",
        ]
        for r in results
    ]
    headers = ["target min", "audio min", "turns", "chars", "wall s", "RTF"]
    print(table([*headers, "baseline RSS MB", "peak RSS MB", "growth MB"], rows))

    print()
    print(f"RSS during the task (sampled every {SAMPLE_S} s; progress 0-95% makes turns, 96-100% mixes):")
    rows = [
        [
            f"{r.minutes:g}",
            f"{r.maxrss_at_baseline_mb:.0f}",
            f"{r.baseline_mb:.0f}",
            f"{r.rss_at(10):.0f}",
            f"{r.rss_at(50):.0f}",
            f"{r.rss_at(90):.0f}",
            f"{r.max_rss(0, 96):.0f}",
            f"{r.max_rss(96, 101):.0f}",
            f"{r.samples[-1][2]:.0f}",
            f"{r.load_s:.1f}",
        ]
        for r in results
    ]
    headers = ["target min", "peak before task", "baseline", "at 10%", "at 50%", "at 90%"]
    print(table([*headers, "max making turns", "max mixing", "at end", "load s"], rows))

    first, last = results[0], results[-1]
    print()
    delta = last.peak_mb - first.peak_mb
    audio_ratio = last.audio_s / first.audio_s
    growth_ratio = last.growth_mb / first.growth_mb if first.growth_mb > 0 else float("nan")
    print(
        f"peak grows {delta:+.0f} MB from {first.audio_s / 60:.1f} to {last.audio_s / 60:.1f} minutes of "
        f"audio ({audio_ratio:.1f}x the audio); growth over baseline {first.growth_mb:.0f} MB -> "
        f"{last.growth_mb:.0f} MB (ratio {growth_ratio:.2f}x); "
        f"{delta / max(last.audio_s / 60 - first.audio_s / 60, 1e-9):+.1f} MB per extra minute of audio"
    )
    verdict = "FLAT" if delta <= FLAT_LIMIT_MB else "GROWS"
    print(
        f"memory: {verdict} (peak at {last.minutes:g} min - peak at {first.minutes:g} min = {delta:+.0f} MB; "
        f"flat means <= {FLAT_LIMIT_MB:.0f} MB)"
    )


def thin(lines: list[tuple[bool, str]], keep: int = 4) -> list[str]:
    """Every event line; of each run of poll lines between events, `keep` evenly spaced (ends kept)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) <= keep:
            out.extend(run)
        else:
            picks = sorted({round(i * (len(run) - 1) / (keep - 1)) for i in range(keep)})
            out.extend(run[i] for i in picks)
        run.clear()

    for event, line in lines:
        if event:
            flush()
            out.append(line)
        else:
            run.append(line)
    flush()
    return out


def report_restart(r: RestartResult) -> None:
    print()
    print(
        f"Crash and restart ({r.minutes:g}-minute script, {r.turns} turns; SIGKILL once progress >= "
        f"{r.crash_at:g}%), polled through GET /api/v1/task/{{id}} every {POLL_S:g} s (a few of the "
        f"lines printed every {PRINT_EVERY_S:g} s):"
    )
    for line in thin(r.poll_lines):
        print(line)
    print()
    print("task log (excerpt):")
    for line in r.log_excerpt:
        print(f"  {line}")
    print()
    rows = [
        ["progress at the crash", f"{r.progress_at_crash:.1f}%"],
        ["turns finished before the crash", str(r.turns_before_crash)],
        ["files of the turn in flight", ", ".join(r.partial_at_crash) or "none"],
        ["turns kept after the restart", str(r.turns_kept)],
        ["turns made after the restart", str(r.turns_made_after)],
        ["work in flight lost at the crash", f"{r.inflight_lost_s:.1f} s"],
        ["kill -> server answers again", f"{r.restart_s:.1f} s"],
        ["time lost to the restart", f"{r.time_lost_s:.1f} s"],
        ["submit -> crash", f"{r.first_wall_s:.1f} s"],
        ["restart -> completed", f"{r.second_wall_s:.1f} s"],
        ["total wall (submit -> completed)", f"{r.total_wall_s:.1f} s"],
        ["audio (result) / dialogue.wav", f"{r.audio_s:.2f} s / {r.wav_s:.2f} s"],
        ["RTF incl. the restart", f"{r.total_wall_s / r.audio_s:.3f}"],
    ]
    widths = [max(len(row[0]) for row in rows), max(len(row[1]) for row in rows)]
    for name, value in rows:
        print(f"  {name.ljust(widths[0])}  {value.rjust(widths[1])}")
    print()
    for name, ok, detail in r.checks:
        print(f"  {'PASS' if ok else 'FAIL'}: {name}: {detail}")
    print(
        "  (time lost = gap between the last turn finished before the crash and the first after it, "
        "less that turn's cost at the pre-crash pace)"
    )


# ---- main ------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="longest memory run (default 10)")
    parser.add_argument(
        "--restart-minutes", type=float, default=5.0, help="script length for the crash run (default 5)"
    )
    parser.add_argument("--crash-at", type=float, default=40.0, help="kill the server at this progress %%")
    parser.add_argument("--skip-memory", action="store_true", help="only the crash run")
    parser.add_argument("--skip-restart", action="store_true", help="only the memory runs")
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minutes <= 0 or args.restart_minutes <= 0:
        parser.error("--minutes and --restart-minutes must be positive")
    if not 0 < args.crash_at < 95:
        parser.error("--crash-at must be between 0 and 95 (turns end at 95%, mixing follows)")
    return args


def main() -> None:
    args = parse_args()
    if args.child is not None:
        child(args.child, args.data_dir, args.result)
        return
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    lengths = sorted({m for m in SHORT_MINUTES if m < args.minutes} | {args.minutes})
    print(
        f"voices: S1 = Kokoro {VOICES['S1']}, S2 = Kokoro {VOICES['S2']} (the dialogue defaults); "
        f"scripts sized at {CHARS_PER_SECOND:g} characters per second of speech; {os.cpu_count()} cores"
    )
    memory: list[LengthResult] = []
    restart: RestartResult | None = None
    with tempfile.TemporaryDirectory(prefix="bench-dialogue-") as tmp:
        if not args.skip_memory:
            memory = [run_length(minutes, Path(tmp)) for minutes in lengths]
        if not args.skip_restart:
            restart = run_restart(args.restart_minutes, args.crash_at, Path(tmp))
    if memory:
        report_memory(memory)
    if restart:
        report_restart(restart)
    print()
    print(f"load average (1 min) at start / end: {load_start:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"bench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
