"""What the tabs share: the language control, who owns a task made in the UI, the voice picker's
choices, a script's one-line summary, and the frames the live training curves are drawn from."""

from __future__ import annotations

import fnmatch
import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import gradio as gr
import pandas as pd

from studio.core import Studio
from studio.errors import StudioError
from studio.services.script import Script
from studio.tasks.records import Task, TaskStatus

# What a language control offers: auto detects each sentence's language by its script.
LANGUAGE_CHOICES = [
    ("Auto (each sentence)", "auto"),
    ("Mandarin 中文", "zh"),
    ("Japanese 日本語", "ja"),
    ("English (US)", "en-us"),
    ("English (UK)", "en-gb"),
    ("Spanish Español", "es"),
    ("French Français", "fr-fr"),
    ("Italian Italiano", "it"),
    ("Portuguese (Brazil) Português", "pt-br"),
    ("German Deutsch", "de"),
    ("Hindi हिन्दी", "hi"),
]
CURVE_COLUMNS = ("step", "value")  # a live curve's x and y columns, unless a tab names its own


def language_dropdown(elem_id: str, label: str = "Language", **options: Any) -> gr.Dropdown:
    """The language control every tab shows, on auto; `options` are gr.Dropdown's (info, scale...)."""
    return gr.Dropdown(LANGUAGE_CHOICES, value="auto", label=label, elem_id=elem_id, **options)


def ui_owner(request: gr.Request) -> str:
    """Who owns a task made in the UI: the logged-in user, else this browser session."""
    return f"user-{request.username}" if request.username else f"ui-{request.session_hash}"


def all_voices(studio: Studio) -> list[tuple[str, str]]:
    """Every voice of every engine that can run here, as (label, id) choices."""
    return [(f"{v.name} ({v.id}, {v.engine})", v.id) for v in studio.registry.voices()]


def voice_dropdown(
    choices: list[tuple[str, str]], value: str, label: str, elem_id: str, **options: Any
) -> gr.Dropdown:
    """A voice picker: one of `choices`, or any voice id typed in (a blend, a voice made since);
    `options` are gr.Dropdown's (info, scale...)."""
    return gr.Dropdown(choices, value=value, label=label, allow_custom_value=True, elem_id=elem_id, **options)


def summarize(script: Script) -> str:
    """A parsed script in one line: how many turns, each speaker's (with its name where the script
    names it) and how many turns each has: "4 turns, 2 speakers: S1 Alice (2), S2 Bob (2)"."""
    turns = {s.id: sum(1 for turn in script.turns if turn.speaker == s.id) for s in script.speakers}
    return f"{len(script.turns)} turns, {len(turns)} speakers: " + ", ".join(
        f"{s.id}{'' if s.label == s.id else ' ' + s.label} ({turns[s.id]})" for s in script.speakers
    )


def curve_frame(
    points: list[Any], key: str | None = None, columns: tuple[str, str] = CURVE_COLUMNS
) -> pd.DataFrame:
    """[x, y] pairs (no key) or {"step", key: value} rows as a plot frame. Typed columns even when
    empty: an untyped (object) column would be plotted as categories."""
    if key is None:
        rows = [(float(p[0]), float(p[1])) for p in points if isinstance(p, list | tuple)]
    else:
        rows = [
            (float(p["step"]), float(p[key]))
            for p in points
            if isinstance(p, dict) and isinstance(p.get(key), int | float)
        ]
    return pd.DataFrame(rows, columns=list(columns)).astype(dict.fromkeys(columns, "float64"))


def read_curve(path: Path, key: str | None = None, columns: tuple[str, str] = CURVE_COLUMNS) -> pd.DataFrame:
    """The live curve a fit or a training writes to `path` (JSON, as `curve_frame` reads it); empty
    while there is none, or while it is being written."""
    try:
        return curve_frame(json.loads(path.read_text()), key, columns)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return curve_frame([], key, columns)


# ---- a task made in a tab: following it, cancelling it, its files ------------------------------
TASK_POLL_SECONDS = 0.5  # how often a tab reads a running task's progress


def follow_task(
    studio: Studio, task_id: str, every: float = TASK_POLL_SECONDS
) -> Iterator[tuple[str, Task | None]]:
    """A task's status line until it ends, for a tab to show: `("**42%** · step, about 9 s left",
    None)` every `every` seconds while it runs; then `("**failed**: why", None)` when it failed or
    was cancelled, or `("", task)` when it completed (the tab shows its result)."""
    started = studio.store.get(task_id)
    assert started is not None
    for task in watch_task(studio, started, every):  # the last one yielded has finished
        if not task.status.finished:
            yield task_progress(task), None
    yield (task_failure(task), None) if task.status != TaskStatus.COMPLETED else ("", task)


def cancel_task(studio: Studio, task_id: str) -> str:
    """A tab's Cancel button: cancel the task it started, if any; what the status line says."""
    if task_id:
        studio.runner.cancel(task_id)
        return "Cancelling…"
    return "Nothing is running."


def task_file(studio: Studio, task_id: str, name: str) -> str | None:
    """Where one of a task's files is (a name its file list has), for a player; None if it has none."""
    path = studio.store.file_path(task_id, name)
    return str(path) if path else None


def task_files(studio: Studio, task_id: str, *names: str) -> list[str]:
    """A task's files for a download list, in the order asked for: each name a file of the task or a
    pattern (`stems/*.wav`: its matches, sorted); names the task does not have are left out."""
    listed = studio.store.files(task_id)
    found = [name for pattern in names for name in listed if fnmatch.fnmatchcase(name, pattern)]
    return [path for name in found if (path := task_file(studio, task_id, name))]


# ---- a handler's pieces: its errors, its output files, a task followed with its curve -----------
@contextmanager
def shown_errors() -> Iterator[None]:
    """A StudioError raised inside shows as the tab's error message (gr.Error), without the trace."""
    try:
        yield
    except StudioError as error:
        raise gr.Error(error.message) from None


def ui_output(studio: Studio, stem: str, suffix: str = "wav") -> Path:
    """A new file for a handler's output (a player, a download): `<stem>-<random>.<suffix>` in the
    data folder's ui_outputs."""
    folder = studio.settings.data_dir / "ui_outputs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}-{uuid.uuid4().hex[:10]}.{suffix}"


def watch_task(studio: Studio, task: Task, every: float = TASK_POLL_SECONDS) -> Iterator[Task]:
    """`task` read again every `every` seconds: yielded while it runs, and last once it has finished."""
    while not task.status.finished:
        yield task
        time.sleep(every)
        task = studio.store.get(task.task_id) or task
    yield task


def task_progress(task: Task, waiting: str = "starting") -> str:
    """A running task's status line: `**42%** · its step, about 9 s left` (`waiting` before a step)."""
    eta = f", about {task.eta_seconds:.0f} s left" if task.eta_seconds else ""
    return f"**{task.progress:.0f}%** · {task.current_step or waiting}{eta}"


def task_failure(task: Task) -> str:
    """A failed or cancelled task's status line: `**failed**: why`."""
    reason = f": {task.error_message}" if task.error_message else ""
    return f"**{task.status.value}**{reason}"


def task_curve(
    studio: Studio,
    task_id: str,
    name: str = "curve.json",
    key: str | None = None,
    columns: tuple[str, str] = CURVE_COLUMNS,
) -> pd.DataFrame:
    """The live curve a task writes to its file `name` (as `read_curve` reads it); empty while there is none."""
    path = studio.store.file_path(task_id, name)
    return read_curve(path, key, columns) if path else curve_frame([], key, columns)


# How Requirement.describe words a missing file: "missing <path> (<how to get it>)".
MISSING_FILE = re.compile(r"^missing (?P<path>\S+)(?: \((?P<hint>.*)\))?$")


def short_needs(missing: Sequence[str], problems: Sequence[str] = ()) -> str:
    """The table's cell: what is missing in a few words (files counted by folder, the first clause of
    anything else), then each problem with a placed file (its first clause); `needs_details` spells
    them out below the table."""
    if not missing and not problems:
        return "nothing"
    folders: dict[str, int] = {}
    others = []
    for line in missing:
        if match := MISSING_FILE.match(line):
            folder = "/".join(PurePath(match["path"]).parts[:2])
            folders[folder] = folders.get(folder, 0) + 1
        else:
            others.append(line.split(" (")[0].split(": ")[0])
    files = [f"{count} file{'s' * (count > 1)} in {folder}/" for folder, count in folders.items()]
    flagged = [f"problem: {problem.split(' (')[0].split(': ')[0]}" for problem in problems]
    return "; ".join(others + files + flagged)
