"""What the Training tab shows, worked out from a task and its clips (no component, no event): the
backends' notes, the steps table, the status line, the proofreading table and its edits, the training
and test results, and the params the train step gets from the tab's controls."""

from __future__ import annotations

import html
import importlib.util
from typing import Any

import pandas as pd

from engines.base import EngineState
from studio.core import Studio
from studio.services.training.service import PREPARE_STEPS, STEPS
from studio.tasks.records import Task, TaskStatus
from studio.ui.common import short_needs

TRAIN_STEPS = tuple(step for step in STEPS if step not in (*PREPARE_STEPS, "test_inference"))
ACTIVE = ("queued", "running")
STEP_COLUMNS = ["step", "state", "run seconds", "result"]
CLIP_COLUMNS = ["id", "text", "drop", "confidence", "seconds", "note"]
TEST_COLUMNS = ["#", "sentence", "Whisper heard", "word error", "similarity"]
MAX_TEST_SENTENCES = 5  # the test step speaks at most this many
LOG_LINES = 40
BACKEND_LABELS = {
    "kokoro_fit": "Kokoro fit (CPU, minutes)",
    "piper": "Piper VITS (train a model)",
    "gpt_sovits": "GPT-SoVITS",
}
# The live plot's title for each backend whose training writes a curve (TrainingService.curve_file).
# One line, titled (not colored, not axis titles): in gradio 6 a plot with a color series stops
# drawing once it is updated point by point, and axis titles set by an update do not show.
CURVE_TITLES = {
    "kokoro_fit": "While training: similarity to the dataset (best so far) by trial",
    "piper": "While training: generator loss by step",
}


def backend_notes(studio: Studio) -> str:
    """One line per backend: what it makes, whether it can run here (and what is missing), its license."""
    kokoro = studio.registry.engine("kokoro")
    kokoro_state = kokoro.status()
    lines = [
        f"- **{BACKEND_LABELS['kokoro_fit']}**: fits a Kokoro style to your dataset -> a library voice. "
        f"State: {_state_text(kokoro_state.state, kokoro_state.missing)}. "
        f"License: {kokoro.info.license}."
    ]
    missing = [
        f"Python package '{name}' is not installed (pip install 'piper-tts[train]')"
        for name in ("piper.train", "lightning")
        if importlib.util.find_spec(name) is None
    ]
    gpus = len(studio.allocator.devices)
    lines.append(
        f"- **{BACKEND_LABELS['piper']}**: trains a Piper voice (ONNX) -> a voice every tab can use; the tiny "
        f"preset runs on CPU, the full one wants a GPU ({gpus} visible). "
        f"State: {_state_text(EngineState.MISSING_PACKAGE if missing else EngineState.READY, missing)}. "
        "License: GPL-3.0-or-later (piper-tts trainer)."
    )
    if "gpt_sovits" in studio.registry.names():
        engine = studio.registry.engine("gpt_sovits")
        status = engine.status()
        lines.append(
            f"- **{BACKEND_LABELS['gpt_sovits']}**: GPT-SoVITS's own training scripts. "
            f"State: {_state_text(status.state, status.missing)}. License: {engine.info.license}."
        )
    else:
        lines.append(
            f"- **{BACKEND_LABELS['gpt_sovits']}**: not set up (its adapter is not registered in this studio)."
        )
    return "\n".join(lines)


def _state_text(state: EngineState, missing: tuple[str, ...] | list[str]) -> str:
    """The state, and in short what is missing (the Engines tab lists the steps in full)."""
    if state.usable or not missing:
        return f"`{state}`"
    return (
        f"`{state}` (missing: {short_needs(list(missing))}; the steps: Engines tab, What each engine needs)"
    )


def summarize(result: dict[str, Any]) -> str:
    """A step's result in one short line (its numbers and counts; lists by their length)."""
    parts = []
    for key, value in result.items():
        if key == "run_seconds":  # the step's run time: its own column
            continue
        if isinstance(value, bool | int):
            parts.append(f"{key} {value}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.3g}")
        elif isinstance(value, str):
            parts.append(f"{key} {value[:60]}")
        elif isinstance(value, list | dict):
            parts.append(f"{key}: {len(value)}")
    return ", ".join(parts)


def step_rows(task: Task) -> list[list[Any]]:
    results = task.result.get("steps", {})
    rows = []
    for step in STEPS:
        state = task.steps.get(step, "pending")
        result = results.get(step, {}) if state in ("done", "skipped") else {}
        if state == "failed":
            text = task.error_message or "failed (see the log)"
        elif state == "skipped":
            text = f"skipped: {result.get('skipped', '')}"
        else:
            text = summarize(result)
        seconds = result.get("run_seconds")
        rows.append([step, state, "" if seconds is None else f"{seconds:.1f}", text])
    return rows


def steps_left(task: Task) -> str:
    """The "(n steps left)" suffix for a task `completed` between steps (its status alone reads as finished)."""
    left = len(task.remaining_steps)
    return f" ({left} steps left)" if task.status == TaskStatus.COMPLETED and left else ""


def status_html(task: Task, queue_position: int) -> str:
    """The progress bar and one line: percent, current step, ETA, task id; a failure's reason."""
    active = [step for step, state in task.steps.items() if state in ACTIVE]
    percent = float(task.progress)
    parts = [f"<b>{percent:.0f}%</b>"]
    if active:
        running = next((s for s, state in task.steps.items() if state == "running"), "")
        parts.append(html.escape(running or "waiting for a worker"))
        if queue_position:
            parts.append(f"queue position {queue_position}")
        if running and task.eta_seconds:
            parts.append(f"about {task.eta_seconds:.0f} s left in this step")
    elif task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        parts.append(html.escape(task.status.value))
    elif task.remaining_steps:  # `completed` between steps: only what was asked for is done
        parts.append("waiting for the next step")
    else:
        parts.append("every step is done")
    parts.append(f"task <code>{html.escape(task.task_id)}</code>")
    text = " · ".join(parts)
    if task.status == TaskStatus.FAILED and task.error_message:
        text += f"<br><b>Failed:</b> {html.escape(task.error_message)}"
    return f'<progress value="{percent:.1f}" max="100" style="width:100%"></progress><div>{text}</div>'


def log_tail(text: str, lines: int = LOG_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def clip_frame(clips: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        [
            clip["id"],
            clip.get("text", ""),
            bool(clip.get("dropped")),
            None if clip.get("confidence") is None else round(float(clip["confidence"]), 3),
            round(float(clip["duration"]), 2),
            clip.get("reason", ""),
        ]
        for clip in clips
    ]
    return pd.DataFrame(rows, columns=CLIP_COLUMNS)


def clip_edits(frame: pd.DataFrame, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the proofreading table that differ from the clips they were loaded from."""
    loaded = {clip["id"]: clip for clip in clips}
    edits = []
    for row in frame.to_dict("records"):
        clip = loaded.get(str(row["id"]))
        if clip is None:
            continue
        edit: dict[str, Any] = {}
        text = str(row["text"] if row["text"] is not None else "").strip()
        if text != clip.get("text", ""):
            edit["text"] = text
        dropped = row["drop"] in (True, "true", "True", 1)
        if dropped != bool(clip.get("dropped")):
            edit["dropped"] = dropped
        if edit:
            edits.append({"id": clip["id"], **edit})
    return edits


def kept_summary(clips: list[dict[str, Any]]) -> str:
    kept = [clip for clip in clips if not clip.get("dropped")]
    seconds = sum(float(clip["duration"]) for clip in kept)
    return f"{len(kept)} clips kept ({seconds:.1f} s of speech), {len(clips) - len(kept)} dropped"


def train_text(task: Task) -> str:
    """What training and export made: for a Kokoro fit, the held-out comparison with the nearest built-in."""
    steps = task.result.get("steps", {})
    lines = []
    if task.steps.get("train_sovits") == "done":
        fit = steps.get("train_sovits", {})
        if "baseline_similarity" in fit:
            lines.append(
                f"**Similarity to your dataset** (sentences the fit never heard): fitted "
                f"**{fit['similarity']:.3f}** vs nearest built-in `{fit['baseline_voice']}` "
                f"{fit['baseline_similarity']:.3f}; **word error** fitted {fit['wer']:.0%} vs "
                f"{fit['baseline_wer']:.0%}."
            )
        else:
            lines.append(f"**Trained:** {summarize(fit)}")
    if task.steps.get("export_voice") == "done":
        voice = steps.get("export_voice", {}).get("voice_id", "")
        lines.append(f"**Exported:** voice `{voice}`: use it in every tab and the API; test it in step 5.")
    return "\n\n".join(lines)


def test_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [index, row["text"], row["transcript"], f"{row['wer']:.0%}", f"{row['similarity']:.3f}"]
        for index, row in enumerate(result.get("sentences", []), 1)
    ]


def test_text(result: dict[str, Any]) -> str:
    voice = result["voice_id"]
    return (
        f"Voice `{voice}` is ready: use it as voice `{voice}` in the Speech, Dialogue and Voices tabs and "
        f"the API. Mean similarity to your dataset's speaker **{result['mean_similarity']:.3f}** "
        f"(1.0 = the same voice), mean word error **{result['mean_wer']:.0%}** (what Whisper misheard)."
    )


def retry_steps(task: Task, asked: list[str]) -> list[str]:
    """Steps to run again: those that failed or were cancelled, and those last asked for that never ran."""
    return [
        step
        for step in STEPS
        if task.steps.get(step) in ("failed", "cancelled")
        or (step in asked and task.steps.get(step) == "pending")
    ]


def train_params(
    backend_name: str,
    fit_mode: str,
    size: str,
    batch: float | None,
    steps: float | None,
    bits: str,
    gpu: bool,
) -> dict[str, Any]:
    """The train step's params from the Train tab's controls, for the task's backend."""
    if backend_name == "kokoro_fit":
        return {"mode": fit_mode}
    if backend_name != "piper":
        return {}
    params: dict[str, Any] = {"preset": size}
    if bits:
        params["precision"] = bits
    if batch:
        params["batch_size"] = int(batch)
    if steps:
        params["max_steps"] = int(steps)
    if gpu:
        params["gpu"] = True
    return params
