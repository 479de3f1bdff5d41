"""What the tabs share: the language control, who owns a task made in the UI, the voice picker's
choices, a script's one-line summary, and the frames the live training curves are drawn from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from studio.core import Studio
from studio.services.script import Script

# What a language control offers: auto detects each sentence's language by its script.
LANGUAGE_CHOICES = [
    ("Auto (each sentence)", "auto"),
    ("Mandarin 中文", "zh"),
    ("Japanese 日本語", "ja"),
    ("English (US)", "en-us"),
    ("English (UK)", "en-gb"),
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


def summarize(script: Script) -> str:
    """A parsed script in one line: how many turns, and which label each speaker id has."""
    labels = {s.id: s.label for s in script.speakers}
    return f"{len(script.turns)} turns, {len(labels)} speakers: " + ", ".join(
        f"{k} = {v}" for k, v in labels.items()
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
