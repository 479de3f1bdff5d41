"""The "Training" tab: a wizard that takes recordings to a trained voice, as the steps of one training task.

1. Upload creates the task (recordings go to its `inputs/`, or a Piper dataset zip is imported).
2. Prepare runs the dataset steps (convert, slice, denoise, transcribe).
3. Proofread corrects transcripts and drops bad clips, least certain first, with a player.
4. Train checks the dataset (preflight), then trains with the task's backend and exports the voice.
5. Test speaks new sentences with the voice and shows what Whisper heard and how close it sounds.

A panel under the wizard follows the task: each step's state, time and result, the progress, ETA and
log, Cancel and Resume. A timer reads the task row while a step is queued or running; the handlers
(training_handlers.py) call the same services as the REST routes. This module is the layout and its
wiring; training_views.py works out what the components show.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.core import Studio
from studio.services.training.service import BACKENDS, PIPER_PRECISIONS, PIPER_PRESETS, UPLOAD_EXTENSIONS
from studio.services.voice_fit import HELD_OUT
from studio.ui.common import curve_frame, language_dropdown
from studio.ui.training_handlers import TrainingHandlers, TrainingPanel
from studio.ui.training_views import (
    BACKEND_LABELS,
    CLIP_COLUMNS,
    MAX_TEST_SENTENCES,
    STEP_COLUMNS,
    TEST_COLUMNS,
    backend_notes,
    clip_frame,
)

POLL_SECONDS = 0.75


def preset_count(label: str, elem_id: str) -> gr.Number:
    """A whole number for Piper's training (batch size, max steps); empty: the preset's own."""
    return gr.Number(
        None, label=label, info="empty: the preset's own", precision=0, minimum=1, elem_id=elem_id
    )


# The tab opens with two recordings (20 s read by the built-in Piper voice Joe, MIT) and a voice name,
# so Create and the steps after it work at once with the kokoro_fit backend.
EXAMPLE_RECORDINGS = [
    str(Path(__file__).resolve().parent.parent.parent / "assets" / "voices" / name)
    for name in ("joe_reading.mp3", "joe_library.mp3")
]
EXAMPLE_NAME = "joe_trained"


def build_training_tab(studio: Studio) -> None:
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
                    EXAMPLE_NAME,
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
                    EXAMPLE_RECORDINGS,
                    file_count="multiple",
                    file_types=list(UPLOAD_EXTENSIONS),
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
                        [(f"{name}: {p.description}", name) for name, p in PIPER_PRESETS.items()],
                        value="full" if gpus else "tiny",
                        label="Preset",
                        elem_id="training-preset",
                    )
                    precision = gr.Dropdown(
                        [("the preset's", ""), *PIPER_PRECISIONS],
                        value="",
                        label="Precision",
                        elem_id="training-precision",
                    )
                with gr.Row():
                    batch_size = preset_count("Batch size", "training-batch")
                    max_steps = preset_count("Max steps", "training-max-steps")
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

    ui = TrainingHandlers(
        studio,
        TrainingPanel(
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
            tuple(players),
            wizard,
            task_pick,
        ),
    )
    panel = ui.panel.outputs()
    params_in = [mode, preset, batch_size, max_steps, precision, use_gpu]
    gr.on(None, ui.on_tasks, None, task_pick)  # no triggers: on page load
    create.click(ui.on_create, [voice_name, backend, language, files], panel)
    open_task.click(ui.on_open, task_pick, panel)
    prepare.click(ui.on_prepare, [task_state, seen, denoise], panel)
    cancel.click(ui.on_cancel, [task_state, seen], panel)
    resume.click(ui.on_resume, [task_state, seen, asked], panel)
    clips_table.select(ui.on_pick_clip, [task_state, clips_state], clip_audio)
    save_clips.click(ui.on_save_clips, [task_state, clips_table, clips_state], panel)
    reload_clips.click(ui.on_reload_clips, task_state, panel)
    check.click(ui.on_check, [task_state, *params_in], check_status)
    train.click(ui.on_train, [task_state, seen, *params_in], panel)
    test.click(ui.on_test, [task_state, seen, sentences], panel)
    timer.tick(ui.render, [task_state, seen], panel, concurrency_limit=None, show_progress="hidden")
