"""The "Training" tab: a wizard that takes recordings to a trained voice, as the steps of one training task.

1. Upload creates the task (recordings go to its `inputs/`, or a Piper dataset zip is imported).
2. Prepare runs the dataset steps (convert, slice, denoise, transcribe).
3. Proofread corrects transcripts and drops bad clips, least certain first, with a player.
4. Train checks the dataset (preflight), then trains with the task's backend and exports the voice.
5. Test speaks new sentences with the voice and shows what Whisper heard and how close it sounds.

A panel under the wizard follows the task: each step's state, time and result, the progress, ETA and
log, Cancel and Resume. A timer reads the task row while a step is queued or running; the handlers
call the same services as the REST routes.
"""

from __future__ import annotations

import html
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from pathvalidate import sanitize_filename

from engines.base import EngineState
from studio.core import Studio
from studio.errors import StudioError
from studio.services.training import dataset, piper_backend
from studio.services.training.common import Workspace
from studio.services.training.service import BACKENDS, STEPS
from studio.services.voice_fit import HELD_OUT
from studio.tasks.store import Task, TaskStatus
from studio.ui.common import curve_frame, language_dropdown, read_curve, ui_owner

PREPARE_STEPS = ("convert_audio", "slice_audio", "denoise_audio", "asr_transcribe")
TRAIN_STEPS = tuple(step for step in STEPS if step not in (*PREPARE_STEPS, "test_inference"))
ACTIVE = ("queued", "running")
UPLOAD_TYPES = (*dataset.INPUT_EXTENSIONS, ".zip")
STEP_COLUMNS = ["step", "state", "run seconds", "result"]
CLIP_COLUMNS = ["id", "text", "drop", "confidence", "seconds", "note"]
TEST_COLUMNS = ["#", "sentence", "Whisper heard", "word error", "similarity"]
MAX_TEST_SENTENCES = 5  # the test step speaks at most this many
POLL_SECONDS = 0.75
LOG_LINES = 40
BACKEND_LABELS = {
    "kokoro_fit": "Kokoro fit (CPU, minutes)",
    "piper": "Piper VITS (train a model)",
    "gpt_sovits": "GPT-SoVITS",
}
# What the live plot shows for each backend: the file the training writes ([x, y] pairs, or rows with
# "step" and the key), the key, and the plot's title. One line, titled (not colored, not axis titles):
# in gradio 6 a plot with a color series stops drawing once it is updated point by point, and axis
# titles set by an update do not show.
CURVES = {
    "kokoro_fit": ("curve.json", None, "While training: similarity to the dataset (best so far) by trial"),
    "piper": ("loss.json", "loss_g", "While training: generator loss by step"),
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
    return f"`{state}`" if state.usable or not missing else f"`{state}` ({'; '.join(missing)})"


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


def training_curve(folder: Path, backend: str) -> pd.DataFrame:
    """The training's live curve (train/curve.json or train/loss.json); empty while none, or mid-write."""
    if backend not in CURVES:
        return curve_frame([])
    name, key, _ = CURVES[backend]
    return read_curve(folder / "train" / name, key)


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


def _retry_steps(task: Task, asked: list[str]) -> list[str]:
    """Steps to run again: those that failed or were cancelled, and those last asked for that never ran."""
    return [
        step
        for step in STEPS
        if task.steps.get(step) in ("failed", "cancelled")
        or (step in asked and task.steps.get(step) == "pending")
    ]


def build_training_tab(studio: Studio) -> None:
    max_bytes = studio.settings.max_upload_bytes
    gpus = len(studio.allocator.devices)

    gr.Markdown(
        "Train a voice from your own recordings, GPT-SoVITS style: upload, prepare the dataset, proofread "
        "its transcripts, train, and test the result. Each step runs as part of one task you can leave "
        "and come back to."
    )
    with gr.Row():
        task_pick = gr.Dropdown([], value=None, label="Your training tasks", scale=4, elem_id="training-pick")
        open_task = gr.Button("Open", scale=1, elem_id="training-open")
    with gr.Tabs(elem_id="training-wizard") as wizard:
        with gr.Tab("1. Upload", id="train-upload"), gr.Row():
            with gr.Column(scale=3):
                voice_name = gr.Textbox(
                    label="Voice name",
                    placeholder="e.g. my_voice",
                    info="the trained voice's id: a-z, 0-9, '_' and '-'",
                    elem_id="training-name",
                )
                backend = gr.Radio(
                    [(BACKEND_LABELS[name], name) for name in BACKENDS],
                    value="kokoro_fit",
                    label="Backend",
                    elem_id="training-backend",
                )
                language = language_dropdown(
                    "training-language",
                    "Language of the recordings",
                    info="for the transcripts and the test sentences; auto: heard per clip",
                )
                files = gr.File(
                    file_count="multiple",
                    file_types=list(UPLOAD_TYPES),
                    type="filepath",
                    label="Recordings of one speaker (wav, mp3, flac, m4a, ogg, mp4), or one Piper "
                    "dataset zip (metadata.csv + wavs/)",
                    elem_id="training-files",
                )
                create = gr.Button("Create", variant="primary", elem_id="training-create")
            with gr.Column(scale=2):
                gr.Markdown(backend_notes(studio), elem_id="training-backends")
        with gr.Tab("2. Prepare", id="train-prepare"):
            gr.Markdown(
                "Converts the uploads, slices them into utterances at the pauses, removes background "
                "noise and transcribes every clip with the bundled Whisper."
            )
            denoise = gr.Checkbox(True, label="Denoise (DeepFilterNet3)", elem_id="training-denoise")
            prepare = gr.Button("Run dataset steps", variant="primary", elem_id="training-prepare")
        with gr.Tab("3. Proofread", id="train-proofread"):
            gr.Markdown(
                "The least certain transcripts come first. Correct a transcript by editing its text; tick "
                "**drop** to leave a clip out. Select a row to hear it."
            )
            clips_table = gr.Dataframe(
                clip_frame([]),
                headers=CLIP_COLUMNS,
                datatype=["str", "str", "bool", "number", "number", "str"],
                interactive=True,
                static_columns=[0, 3, 4, 5],
                wrap=True,
                column_widths=["14%", "50%", "7%", "10%", "8%", "11%"],
                elem_id="training-clips",
            )
            clip_audio = gr.Audio(
                label="Selected clip", type="filepath", interactive=False, elem_id="training-clip-audio"
            )
            with gr.Row():
                save_clips = gr.Button("Save edits", variant="primary", elem_id="training-save-clips")
                reload_clips = gr.Button("Reload clips", elem_id="training-reload-clips")
            clips_status = gr.Markdown(elem_id="training-clips-status")
        with gr.Tab("4. Train", id="train-train"):
            with gr.Group(visible=True) as kokoro_params:
                modes = ["quick", "thorough"] if studio.settings.allow_thorough_fit else ["quick"]
                mode = gr.Radio(
                    modes,
                    value="quick",
                    label="Kokoro fit",
                    info="quick: about 30 s of search; thorough: minutes",
                    elem_id="training-mode",
                )
            with gr.Group(visible=False) as piper_params:
                with gr.Row():
                    preset = gr.Radio(
                        [(f"{name}: {p.description}", name) for name, p in piper_backend.PRESETS.items()],
                        value="full" if gpus else "tiny",
                        label="Preset",
                        elem_id="training-preset",
                    )
                    precision = gr.Dropdown(
                        [("the preset's", ""), *piper_backend.PRECISIONS],
                        value="",
                        label="Precision",
                        elem_id="training-precision",
                    )
                with gr.Row():
                    batch_size = gr.Number(
                        None,
                        label="Batch size",
                        info="empty: the preset's own",
                        precision=0,
                        minimum=1,
                        elem_id="training-batch",
                    )
                    max_steps = gr.Number(
                        None,
                        label="Max steps",
                        info="empty: the preset's own",
                        precision=0,
                        minimum=1,
                        elem_id="training-max-steps",
                    )
                    use_gpu = gr.Checkbox(
                        bool(gpus), label=f"Use a GPU ({gpus} visible)", interactive=bool(gpus)
                    )
            gpt_params = gr.Markdown(
                "GPT-SoVITS trains with its own scripts and settings (under `weights/`).", visible=False
            )
            with gr.Row():
                check = gr.Button("Check", elem_id="training-check")
                train = gr.Button("Train", variant="primary", elem_id="training-train")
            check_status = gr.Markdown(elem_id="training-check-status")
            train_result = gr.Markdown(elem_id="training-result")
            curve = gr.LinePlot(
                curve_frame([]),
                x="step",
                y="value",
                title="While training",
                height=220,
                elem_id="training-curve",
            )
        with gr.Tab("5. Test", id="train-test"):
            sentences = gr.Textbox(
                "\n".join(HELD_OUT),
                label=f"Sentences the voice never heard (one per line, at most {MAX_TEST_SENTENCES})",
                lines=4,
                elem_id="training-sentences",
            )
            test = gr.Button("Test", variant="primary", elem_id="training-test")
            test_summary = gr.Markdown(elem_id="training-test-summary")
            test_table = gr.Dataframe(
                headers=TEST_COLUMNS,
                interactive=False,
                wrap=True,
                column_widths=["5%", "35%", "35%", "12%", "13%"],
                elem_id="training-test-table",
            )
            players = [
                gr.Audio(
                    label=f"Sentence {n}",
                    type="filepath",
                    interactive=False,
                    visible=False,
                    elem_id=f"training-test-audio-{n}",
                )
                for n in range(1, MAX_TEST_SENTENCES + 1)
            ]

    gr.Markdown("### Task")
    status = gr.HTML(elem_id="training-status")
    with gr.Row():
        cancel = gr.Button("Cancel", variant="stop", visible=False, elem_id="training-cancel")
        resume = gr.Button("Resume / Retry", visible=False, elem_id="training-resume")
    steps_table = gr.Dataframe(
        headers=STEP_COLUMNS,
        interactive=False,
        wrap=True,
        column_widths=["22%", "10%", "9%", "59%"],
        elem_id="training-steps",
    )
    log_box = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True, elem_id="training-log")

    timer = gr.Timer(POLL_SECONDS, active=False)
    task_state = gr.State("")
    seen = gr.State({})  # what the panel shows now: task id, step states, log length
    asked = gr.State([])  # the steps last asked for (Resume runs those that never ran)
    clips_state = gr.State([])  # the clips as loaded into the proofreading table

    def require_task(task_id: str) -> Task:
        task = studio.store.get(task_id) if task_id else None
        if task is None:
            raise gr.Error("Create a training task first (step 1), or open one of yours above.")
        return task

    def task_choices(owner: str) -> list[tuple[str, str]]:
        return [
            (f"{t.task_name} · {t.status.value}{steps_left(t)} · {t.task_id}", t.task_id)
            for t in studio.store.list(owner=owner)
            if t.kind == "training"
        ]

    def load_clip_table(task: Task) -> dict[Any, Any]:
        workspace = Workspace(studio.store.folder(task.task_id))
        try:
            clips = dataset.load_clips(workspace, low_confidence_first=True)
        except StudioError:
            return {clips_table: clip_frame([]), clips_state: [], clips_status: ""}
        return {clips_table: clip_frame(clips), clips_state: clips, clips_status: kept_summary(clips)}

    def test_outputs(task: Task) -> dict[Any, Any]:
        result = task.result.get("steps", {}).get("test_inference", {})
        rows = result.get("sentences", []) if task.steps.get("test_inference") == "done" else []
        folder = studio.store.folder(task.task_id)
        updates: dict[Any, Any] = {
            test_summary: test_text(result) if rows else "",
            test_table: test_rows(result) if rows else [],
        }
        for index, player in enumerate(players):
            if index < len(rows):
                updates[player] = gr.Audio(value=str(folder / rows[index]["file"]), visible=True)
            else:
                updates[player] = gr.Audio(value=None, visible=False)
        return updates

    def render(task_id: str, shown: dict[str, Any]) -> dict[Any, Any]:
        """The panel's updates for the task's state now; parts that did not change since `shown` stay."""
        task = studio.store.get(task_id) if task_id else None
        if task is None:
            return {timer: gr.Timer(active=False)}
        fresh = shown.get("task") != task.task_id
        before = {} if fresh else shown.get("steps", {})
        changed = {step for step, state in task.steps.items() if before.get(step) != state}
        active = any(state in ACTIVE for state in task.steps.values())
        folder = studio.store.folder(task.task_id)
        backend_name = task.config.get("backend", "kokoro_fit")
        log_text = studio.store.read_log(task.task_id)
        retry = task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) or any(
            state in ("failed", "cancelled") for state in task.steps.values()
        )
        updates: dict[Any, Any] = {
            task_state: task.task_id,
            seen: {"task": task.task_id, "steps": dict(task.steps), "log": len(log_text)},
            status: status_html(task, studio.runner.queue_position(task.task_id)),
            timer: gr.Timer(active=active),
            cancel: gr.Button(visible=active),
            resume: gr.Button(visible=not active and retry),
        }
        if fresh or len(log_text) != shown.get("log"):
            updates[log_box] = log_tail(log_text)
        if fresh or changed:
            updates[steps_table] = step_rows(task)
            updates[task_pick] = gr.Dropdown(choices=task_choices(task.owner), value=task.task_id)
        if fresh:
            title = CURVES[backend_name][2] if backend_name in CURVES else "While training"
            updates |= {
                kokoro_params: gr.Group(visible=backend_name == "kokoro_fit"),
                piper_params: gr.Group(visible=backend_name == "piper"),
                gpt_params: gr.Markdown(visible=backend_name == "gpt_sovits"),
                curve: gr.LinePlot(training_curve(folder, backend_name), title=title),
            }
        elif "train_sovits" in changed or task.steps.get("train_sovits") == "running":
            updates[curve] = training_curve(folder, backend_name)
        if fresh or changed & {"train_sovits", "export_voice"}:
            updates[train_result] = train_text(task)
        if fresh or ("asr_transcribe" in changed and task.steps.get("asr_transcribe") == "done"):
            updates |= load_clip_table(task)
        if fresh or "test_inference" in changed:
            updates |= test_outputs(task)
        failed = [step for step in changed if task.steps.get(step) == "failed"]
        if failed and not fresh:
            gr.Warning(f"{failed[0]} failed: {task.error_message}")
        return updates

    def queue(task: Task, steps: list[str], per_step: dict[str, dict[str, Any]] | None = None) -> None:
        try:
            studio.runner.queue_steps(task.task_id, steps, per_step=per_step)
        except StudioError as error:  # a step that is running now
            raise gr.Error(error.message) from None

    def on_create(
        name: str, backend_name: str, spoken: str, paths: list[str] | None, request: gr.Request
    ) -> dict[Any, Any]:
        uploads = [Path(p) for p in paths or []]
        if not uploads:
            raise gr.Error("Add recordings (wav, mp3, flac, m4a, ogg, mp4) or a Piper dataset zip first.")
        wrong = [p.name for p in uploads if p.suffix.lower() not in UPLOAD_TYPES]
        if wrong:
            raise gr.Error(f"{wrong[0]} is not a recording or a dataset zip ({', '.join(UPLOAD_TYPES)}).")
        zips = [p for p in uploads if p.suffix.lower() == ".zip"]
        if zips and len(uploads) > 1:
            raise gr.Error("Upload either recordings or one Piper dataset zip, not both.")
        large = [p.name for p in uploads if p.stat().st_size > max_bytes]
        if large:
            raise gr.Error(f"{large[0]} is larger than the {studio.settings.max_upload_mb} MB upload limit.")
        owner = ui_owner(request)
        try:
            config = {"backend": backend_name, "voice_name": name, "language": spoken}
            task = studio.runner.submit("training", f"train {name} (UI)", config, owner)
        except StudioError as error:  # a bad or taken voice name
            raise gr.Error(error.message) from None
        workspace = Workspace(studio.store.folder(task.task_id))
        try:
            if zips:
                clips = studio.training.import_dataset(workspace, zips[0].read_bytes())
                studio.store.append_log(task.task_id, f"imported a Piper dataset: {len(clips)} clips")
            else:
                save_inputs(task.task_id, workspace, uploads)
        except StudioError as error:
            studio.runner.delete(task.task_id)  # no half-made task left behind
            raise gr.Error(error.message) from None
        return render(task.task_id, {}) | {
            asked: [],
            wizard: gr.Tabs(selected="train-proofread" if zips else "train-prepare"),
            task_pick: gr.Dropdown(choices=task_choices(owner), value=task.task_id),
        }

    def save_inputs(task_id: str, workspace: Workspace, uploads: list[Path]) -> None:
        """Copy the uploads into the task's inputs/ under sanitized, distinct names."""
        workspace.inputs.mkdir(parents=True, exist_ok=True)
        for upload in uploads:
            name = sanitize_filename(upload.name, replacement_text="_").lstrip(".") or "recording"
            target, n = workspace.inputs / name, 2
            while target.exists():
                target, n = workspace.inputs / f"{Path(name).stem}_{n}{Path(name).suffix}", n + 1
            shutil.copyfile(upload, target)
            studio.store.append_log(task_id, f"uploaded inputs/{target.name} ({target.stat().st_size} bytes)")

    def on_open(picked: str | None, request: gr.Request) -> dict[Any, Any]:
        task = studio.store.get(picked) if picked else None
        if task is None or task.owner != ui_owner(request) or task.kind != "training":
            raise gr.Error("Pick one of your training tasks first.")
        return render(task.task_id, {}) | {asked: []}

    def on_tasks(request: gr.Request) -> gr.Dropdown:
        return gr.Dropdown(choices=task_choices(ui_owner(request)))

    def on_prepare(task_id: str, shown: dict[str, Any], denoise_on: bool) -> dict[Any, Any]:
        task = require_task(task_id)
        queue(task, list(PREPARE_STEPS), {"denoise_audio": {"enabled": bool(denoise_on)}})
        return render(task_id, shown) | {asked: list(PREPARE_STEPS)}

    def on_cancel(task_id: str, shown: dict[str, Any]) -> dict[Any, Any]:
        studio.runner.cancel(require_task(task_id).task_id)
        return render(task_id, shown) | {timer: gr.Timer(active=True)}  # the next ticks show it end

    def on_resume(task_id: str, shown: dict[str, Any], last: list[str]) -> dict[Any, Any]:
        task = require_task(task_id)
        steps = _retry_steps(task, last)
        if not steps:
            gr.Info("Nothing to resume: no step failed, was cancelled or is waiting.")
            return {}
        queue(task, steps)
        return render(task_id, shown)

    def on_pick_clip(task_id: str, loaded: list[dict[str, Any]], evt: gr.SelectData) -> str | None:
        task = require_task(task_id)
        # Only ids of the clips loaded here: the row's values come from the browser.
        clip_id = str(evt.row_value[0]) if evt.row_value else ""
        clip = next((clip for clip in loaded if clip["id"] == clip_id), None)
        path = Workspace(studio.store.folder(task.task_id)).dataset / clip["file"] if clip else None
        return str(path) if path and path.is_file() else None

    def on_save_clips(task_id: str, frame: pd.DataFrame, loaded: list[dict[str, Any]]) -> dict[Any, Any]:
        task = require_task(task_id)
        edits = clip_edits(frame, loaded)
        if not edits:
            gr.Warning("Nothing changed: edit a transcript or tick drop first.")
            return {}
        try:
            dataset.update_clips(Workspace(studio.store.folder(task.task_id)), edits)
        except StudioError as error:
            raise gr.Error(error.message) from None
        updates = load_clip_table(task)
        updates[clips_status] = f"Saved {len(edits)} edit(s): {updates[clips_status]}."
        return updates

    def on_reload_clips(task_id: str) -> dict[Any, Any]:
        return load_clip_table(require_task(task_id))

    def train_params(
        backend_name: str,
        fit_mode: str,
        size: str,
        batch: float | None,
        steps: float | None,
        bits: str,
        gpu: bool,
    ) -> dict[str, Any]:
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

    def preflight_problems(task: Task, params: dict[str, Any]) -> list[str]:
        workspace = Workspace(studio.store.folder(task.task_id))
        try:
            return studio.training.preflight(workspace, task.config["backend"], params)
        except StudioError as error:
            return [error.message]

    def on_check(task_id: str, *values: Any) -> str:
        task = require_task(task_id)
        problems = preflight_problems(task, train_params(task.config["backend"], *values))
        if problems:
            return "**Training would fail:**\n" + "\n".join(f"- {problem}" for problem in problems)
        clips = dataset.load_clips(Workspace(studio.store.folder(task.task_id)))
        return f"Ready to train: {kept_summary(clips)}."

    def on_train(task_id: str, shown: dict[str, Any], *values: Any) -> dict[Any, Any]:
        task = require_task(task_id)
        params = train_params(task.config["backend"], *values)
        preparing = any(task.steps.get(step) in ACTIVE for step in PREPARE_STEPS)
        problems = [] if preparing else preflight_problems(task, params)  # else the train step checks
        if problems:
            raise gr.Error("Training would fail: " + "; ".join(problems))
        queue(task, list(TRAIN_STEPS), {"train_sovits": params, "train_gpt": params})
        return render(task_id, shown) | {asked: list(TRAIN_STEPS), check_status: ""}

    def on_test(task_id: str, shown: dict[str, Any], text: str) -> dict[Any, Any]:
        task = require_task(task_id)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise gr.Error("Type at least one sentence to test (one per line).")
        if len(lines) > MAX_TEST_SENTENCES:
            raise gr.Error(f"At most {MAX_TEST_SENTENCES} sentences per test (got {len(lines)}).")
        if task.steps.get("export_voice") not in ("done", *ACTIVE):
            raise gr.Error("Train the voice first (step 4): the test speaks with the exported voice.")
        queue(task, ["test_inference"], {"test_inference": {"sentences": lines}})
        return render(task_id, shown) | {asked: ["test_inference"]}

    panel = [
        task_state,
        seen,
        asked,
        status,
        timer,
        cancel,
        resume,
        log_box,
        steps_table,
        kokoro_params,
        piper_params,
        gpt_params,
        curve,
        train_result,
        check_status,
        clips_table,
        clips_state,
        clips_status,
        test_summary,
        test_table,
        *players,
        wizard,
        task_pick,
    ]
    params_in = [mode, preset, batch_size, max_steps, precision, use_gpu]
    gr.on(None, on_tasks, None, task_pick)  # no triggers: on page load
    create.click(on_create, [voice_name, backend, language, files], panel)
    open_task.click(on_open, task_pick, panel)
    prepare.click(on_prepare, [task_state, seen, denoise], panel)
    cancel.click(on_cancel, [task_state, seen], panel)
    resume.click(on_resume, [task_state, seen, asked], panel)
    clips_table.select(on_pick_clip, [task_state, clips_state], clip_audio)
    save_clips.click(on_save_clips, [task_state, clips_table, clips_state], panel)
    reload_clips.click(on_reload_clips, task_state, panel)
    check.click(on_check, [task_state, *params_in], check_status)
    train.click(on_train, [task_state, seen, *params_in], panel)
    test.click(on_test, [task_state, seen, sentences], panel)
    timer.tick(render, [task_state, seen], panel, concurrency_limit=None, show_progress="hidden")
