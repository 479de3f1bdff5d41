"""The Training tab's events: one method per event of `build_training_tab`, each calling the training
service (as the REST routes do) and answering with updates for the components of `TrainingPanel`.

`render` is the panel for a task's state now; the timer calls it while a step is queued or running,
and every event that changes the task answers with it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from studio.core import Studio
from studio.errors import StudioError
from studio.services.training.service import PREPARE_STEPS, TrainingConfig
from studio.tasks.records import Task, TaskStatus
from studio.ui.common import curve_frame, read_curve, task_file, ui_owner
from studio.ui.training_views import (
    ACTIVE,
    CURVE_TITLES,
    MAX_TEST_SENTENCES,
    TRAIN_STEPS,
    clip_edits,
    clip_frame,
    kept_summary,
    log_tail,
    retry_steps,
    status_html,
    step_rows,
    steps_left,
    test_rows,
    test_text,
    train_params,
    train_text,
)


@dataclass(frozen=True)
class TrainingPanel:
    """The components the events update (their outputs, in this order), and the task they follow."""

    task_state: gr.State
    seen: gr.State  # what the panel shows now: task id, step states, log length
    asked: gr.State  # the steps last asked for (Resume runs those that never ran)
    status: gr.HTML
    timer: gr.Timer
    cancel: gr.Button
    resume: gr.Button
    log_box: gr.Textbox
    steps_table: gr.Dataframe
    kokoro_params: gr.Group
    piper_params: gr.Group
    gpt_params: gr.Markdown
    curve: gr.LinePlot
    train_result: gr.Markdown
    check_status: gr.Markdown
    clips_table: gr.Dataframe
    clips_state: gr.State  # the clips as loaded into the proofreading table
    clips_status: gr.Markdown
    test_summary: gr.Markdown
    test_table: gr.Dataframe
    players: tuple[gr.Audio, ...]
    wizard: gr.Tabs
    task_pick: gr.Dropdown

    def outputs(self) -> list[Any]:
        """Every component above, the players one by one."""
        values = [getattr(self, field.name) for field in fields(self)]
        return [part for value in values for part in (value if isinstance(value, tuple) else (value,))]


class TrainingHandlers:
    """The Training tab's event handlers, over one studio and one panel."""

    def __init__(self, studio: Studio, panel: TrainingPanel) -> None:
        self.studio = studio
        self.panel = panel

    # ---- reading the task ------------------------------------------------------------------------
    def require_task(self, task_id: str) -> Task:
        task = self.studio.store.get(task_id) if task_id else None
        if task is None:
            raise gr.Error("Create a training task first (step 1), or open one of yours above.")
        return task

    def task_choices(self, owner: str) -> list[tuple[str, str]]:
        return [
            (f"{t.task_name} · {t.status.value}{steps_left(t)} · {t.task_id}", t.task_id)
            for t in self.studio.store.list(owner=owner)
            if t.kind == "training"
        ]

    def training_curve(self, task_id: str, backend: str) -> pd.DataFrame:
        """The training's live curve; empty while there is none, or while it is being written."""
        found = self.studio.training.curve_file(task_id, backend)
        return read_curve(*found) if found else curve_frame([])

    def load_clip_table(self, task: Task) -> dict[Any, Any]:
        p = self.panel
        try:
            clips = self.studio.training.clips(task.task_id, low_confidence_first=True)
        except StudioError:
            return {p.clips_table: clip_frame([]), p.clips_state: [], p.clips_status: ""}
        return {p.clips_table: clip_frame(clips), p.clips_state: clips, p.clips_status: kept_summary(clips)}

    def test_outputs(self, task: Task) -> dict[Any, Any]:
        p = self.panel
        result = task.result.get("steps", {}).get("test_inference", {})
        rows = result.get("sentences", []) if task.steps.get("test_inference") == "done" else []
        updates: dict[Any, Any] = {
            p.test_summary: test_text(result) if rows else "",
            p.test_table: test_rows(result) if rows else [],
        }
        for index, player in enumerate(p.players):
            if index < len(rows):
                path = task_file(self.studio, task.task_id, rows[index]["file"])
                updates[player] = gr.Audio(value=path, visible=True)
            else:
                updates[player] = gr.Audio(value=None, visible=False)
        return updates

    def render(self, task_id: str, shown: dict[str, Any]) -> dict[Any, Any]:
        """The panel's updates for the task's state now; parts that did not change since `shown` stay."""
        p = self.panel
        task = self.studio.store.get(task_id) if task_id else None
        if task is None:
            return {p.timer: gr.Timer(active=False)}
        fresh = shown.get("task") != task.task_id
        before = {} if fresh else shown.get("steps", {})
        changed = {step for step, state in task.steps.items() if before.get(step) != state}
        active = any(state in ACTIVE for state in task.steps.values())
        backend_name = task.config.get("backend", "kokoro_fit")
        log_text = self.studio.store.read_log(task.task_id)
        retry = task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) or any(
            state in ("failed", "cancelled") for state in task.steps.values()
        )
        updates: dict[Any, Any] = {
            p.task_state: task.task_id,
            p.seen: {"task": task.task_id, "steps": dict(task.steps), "log": len(log_text)},
            p.status: status_html(task, self.studio.runner.queue_position(task.task_id)),
            p.timer: gr.Timer(active=active),
            p.cancel: gr.Button(visible=active),
            p.resume: gr.Button(visible=not active and retry),
        }
        if fresh or len(log_text) != shown.get("log"):
            updates[p.log_box] = log_tail(log_text)
        if fresh or changed:
            updates[p.steps_table] = step_rows(task)
            updates[p.task_pick] = gr.Dropdown(choices=self.task_choices(task.owner), value=task.task_id)
        if fresh:
            updates |= {
                p.kokoro_params: gr.Group(visible=backend_name == "kokoro_fit"),
                p.piper_params: gr.Group(visible=backend_name == "piper"),
                p.gpt_params: gr.Markdown(visible=backend_name == "gpt_sovits"),
                p.curve: gr.LinePlot(
                    self.training_curve(task.task_id, backend_name),
                    title=CURVE_TITLES.get(backend_name, "While training"),
                ),
            }
        elif "train_sovits" in changed or task.steps.get("train_sovits") == "running":
            updates[p.curve] = self.training_curve(task.task_id, backend_name)
        if fresh or changed & {"train_sovits", "export_voice"}:
            updates[p.train_result] = train_text(task)
        if fresh or ("asr_transcribe" in changed and task.steps.get("asr_transcribe") == "done"):
            updates |= self.load_clip_table(task)
        if fresh or "test_inference" in changed:
            updates |= self.test_outputs(task)
        failed = [step for step in changed if task.steps.get(step) == "failed"]
        if failed and not fresh:
            gr.Warning(f"{failed[0]} failed: {task.error_message}")
        return updates

    def queue(self, task: Task, steps: list[str], per_step: dict[str, dict[str, Any]] | None = None) -> None:
        try:
            self.studio.runner.queue_steps(task.task_id, steps, per_step=per_step)
        except StudioError as error:  # a step that is running now
            raise gr.Error(error.message) from None

    def preflight_problems(self, task: Task, params: dict[str, Any]) -> list[str]:
        try:
            return self.studio.training.params_preflight(task, params)
        except StudioError as error:
            return [error.message]

    # ---- events ----------------------------------------------------------------------------------
    def on_create(
        self, name: str, backend_name: str, spoken: str, paths: list[str] | None, request: gr.Request
    ) -> dict[Any, Any]:
        p = self.panel
        owner = ui_owner(request)
        try:
            config = TrainingConfig(backend=backend_name, voice_name=name, language=spoken)
            uploads = [Path(path) for path in paths or []]
            task, imported = self.studio.training.create_task(config, f"train {name} (UI)", uploads, owner)
        except StudioError as error:  # an upload that cannot be used, a bad or taken voice name
            raise gr.Error(error.message) from None
        return self.render(task.task_id, {}) | {
            p.asked: [],
            p.wizard: gr.Tabs(selected="train-proofread" if imported else "train-prepare"),
            p.task_pick: gr.Dropdown(choices=self.task_choices(owner), value=task.task_id),
        }

    def on_open(self, picked: str | None, request: gr.Request) -> dict[Any, Any]:
        task = self.studio.store.get(picked) if picked else None
        if task is None or task.owner != ui_owner(request) or task.kind != "training":
            raise gr.Error("Pick one of your training tasks first.")
        return self.render(task.task_id, {}) | {self.panel.asked: []}

    def on_tasks(self, request: gr.Request) -> gr.Dropdown:
        return gr.Dropdown(choices=self.task_choices(ui_owner(request)))

    def on_prepare(self, task_id: str, shown: dict[str, Any], denoise_on: bool) -> dict[Any, Any]:
        task = self.require_task(task_id)
        self.queue(task, list(PREPARE_STEPS), {"denoise_audio": {"enabled": bool(denoise_on)}})
        return self.render(task_id, shown) | {self.panel.asked: list(PREPARE_STEPS)}

    def on_cancel(self, task_id: str, shown: dict[str, Any]) -> dict[Any, Any]:
        self.studio.runner.cancel(self.require_task(task_id).task_id)
        return self.render(task_id, shown) | {self.panel.timer: gr.Timer(active=True)}  # ticks show it end

    def on_resume(self, task_id: str, shown: dict[str, Any], last: list[str]) -> dict[Any, Any]:
        task = self.require_task(task_id)
        steps = retry_steps(task, last)
        if not steps:
            gr.Info("Nothing to resume: no step failed, was cancelled or is waiting.")
            return {}
        self.queue(task, steps)
        return self.render(task_id, shown)

    def on_pick_clip(self, task_id: str, loaded: list[dict[str, Any]], evt: gr.SelectData) -> str | None:
        task = self.require_task(task_id)
        # Only ids of the clips loaded here: the row's values come from the browser.
        clip_id = str(evt.row_value[0]) if evt.row_value else ""
        clip = next((clip for clip in loaded if clip["id"] == clip_id), None)
        path = self.studio.training.clip_file(task.task_id, clip) if clip else None
        return str(path) if path else None

    def on_save_clips(
        self, task_id: str, frame: pd.DataFrame, loaded: list[dict[str, Any]]
    ) -> dict[Any, Any]:
        task = self.require_task(task_id)
        edits = clip_edits(frame, loaded)
        if not edits:
            gr.Warning("Nothing changed: edit a transcript or tick drop first.")
            return {}
        try:
            self.studio.training.edit_clips(task.task_id, edits)
        except StudioError as error:
            raise gr.Error(error.message) from None
        updates = self.load_clip_table(task)
        updates[self.panel.clips_status] = f"Saved {len(edits)} edit(s): {updates[self.panel.clips_status]}."
        return updates

    def on_reload_clips(self, task_id: str) -> dict[Any, Any]:
        return self.load_clip_table(self.require_task(task_id))

    def on_check(self, task_id: str, *values: Any) -> str:
        task = self.require_task(task_id)
        problems = self.preflight_problems(task, train_params(task.config["backend"], *values))
        if problems:
            return "**Training would fail:**\n" + "\n".join(f"- {problem}" for problem in problems)
        return f"Ready to train: {kept_summary(self.studio.training.clips(task.task_id))}."

    def on_train(self, task_id: str, shown: dict[str, Any], *values: Any) -> dict[Any, Any]:
        task = self.require_task(task_id)
        params = train_params(task.config["backend"], *values)
        preparing = any(task.steps.get(step) in ACTIVE for step in PREPARE_STEPS)
        problems = [] if preparing else self.preflight_problems(task, params)  # else the train step checks
        if problems:
            raise gr.Error("Training would fail: " + "; ".join(problems))
        self.queue(task, list(TRAIN_STEPS), {"train_sovits": params, "train_gpt": params})
        return self.render(task_id, shown) | {
            self.panel.asked: list(TRAIN_STEPS),
            self.panel.check_status: "",
        }

    def on_test(self, task_id: str, shown: dict[str, Any], text: str) -> dict[Any, Any]:
        task = self.require_task(task_id)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise gr.Error("Type at least one sentence to test (one per line).")
        if len(lines) > MAX_TEST_SENTENCES:
            raise gr.Error(f"At most {MAX_TEST_SENTENCES} sentences per test (got {len(lines)}).")
        if task.steps.get("export_voice") not in ("done", *ACTIVE):
            raise gr.Error("Train the voice first (step 4): the test speaks with the exported voice.")
        self.queue(task, ["test_inference"], {"test_inference": {"sentences": lines}})
        return self.render(task_id, shown) | {self.panel.asked: ["test_inference"]}
