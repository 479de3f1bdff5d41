"""The "Voices & Cloning" tab: a clip -> a library voice fitted to it, compared honestly, and the library.

Create reads the recorded or uploaded clip into the voice library (cleaned, transcribed, checked),
then fits a Kokoro style to it: "quick" in the request with a progress bar, "thorough" as a
`voice_fit` task polled here with its live similarity curve. The comparison plays a sentence the
fit never used in the fitted voice and in the nearest built-in voice, next to the fit report's
numbers. The library section lists, previews, renames, corrects and deletes voices.

This file lays the tab out and wires its events; what each event does is in `voices_handlers.py`.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.core import Studio
from studio.ui.common import curve_frame, language_dropdown
from studio.ui.voices_handlers import (
    COLUMNS,
    CURVE_COLUMNS,
    FitView,
    VoicesHandlers,
    library_rows,
    voice_ids,
)

TRY_SENTENCE = "Please bring the blue folder to the office tomorrow morning."
# The tab opens with this clip (9 s read by the built-in Piper voice Joe, MIT), so Create works at once.
EXAMPLE_CLIP = Path(__file__).resolve().parent.parent.parent / "assets" / "voices" / "joe_reading.mp3"
EXAMPLE_ID = "joe_example"
QUICK = ("Quick (about 30 s)", "quick")
THOROUGH = ("Thorough (minutes, runs as a task)", "thorough")


def build_voices_tab(studio: Studio) -> None:
    gr.Markdown(
        "Record or upload 5-30 s of one person speaking clearly. The studio cleans and transcribes it, "
        "then fits a voice to it and shows how close it got, next to the nearest built-in voice."
    )
    with gr.Row():
        with gr.Column(scale=3):
            clip = gr.Audio(
                sources=["upload", "microphone"],
                type="filepath",
                value=str(EXAMPLE_CLIP),
                label="Reference clip (wav, mp3, flac, m4a, ogg)",
                elem_id="voices-clip",
            )
            with gr.Row():
                voice_id = gr.Textbox(
                    EXAMPLE_ID,
                    label="Voice id",
                    placeholder="e.g. my_voice",
                    info="a-z, 0-9, '_' and '-'",
                    elem_id="voices-id",
                )
                name = gr.Textbox(label="Name", placeholder="defaults to the id", elem_id="voices-name")
            description = gr.Textbox(label="Description", elem_id="voices-description")
            with gr.Row():
                tags = gr.Textbox(label="Tags", placeholder="comma-separated", elem_id="voices-tags")
                language = language_dropdown(
                    "voices-language", "Clip language", info="Auto: the studio hears it"
                )
            modes = [QUICK, THOROUGH] if studio.settings.allow_thorough_fit else [QUICK]
            mode = gr.Radio(modes, value="quick", label="Fit", elem_id="voices-mode")
            with gr.Row():
                create = gr.Button("Create voice", variant="primary", elem_id="voices-create")
                cancel = gr.Button("Cancel fit", variant="stop", visible=False, elem_id="voices-cancel")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="voices-status")
            transcript = gr.Textbox(
                label="Transcript (what the studio heard; correct it if needed)",
                lines=3,
                max_lines=8,
                elem_id="voices-transcript",
            )
            save_transcript = gr.Button("Save transcript", size="sm", elem_id="voices-transcript-save")
            warnings = gr.Markdown(elem_id="voices-warnings")
            curve = gr.LinePlot(
                curve_frame([], columns=CURVE_COLUMNS),
                x="trial",
                y="similarity",
                title="While fitting: similarity on a practice sentence (best so far)",
                y_axis_format=".3f",
                height=220,
                elem_id="voices-curve",
            )

    gr.Markdown("### Compare: a sentence the fit never heard")
    compare = gr.Markdown(elem_id="voices-compare")
    with gr.Row():
        fitted_audio = gr.Audio(
            label="Your fitted voice", type="filepath", interactive=False, elem_id="voices-fitted-audio"
        )
        default_audio = gr.Audio(
            label="Nearest built-in voice", type="filepath", interactive=False, elem_id="voices-default-audio"
        )

    gr.Markdown("### Try it")
    with gr.Row():
        try_text = gr.Textbox(TRY_SENTENCE, label="Text", scale=4, elem_id="voices-try-text")
        speak = gr.Button("Speak", variant="primary", scale=1, elem_id="voices-try")
    try_audio = gr.Audio(
        label="Your voice says", type="filepath", interactive=False, elem_id="voices-try-audio"
    )

    gr.Markdown("### Library")
    table = gr.Dataframe(
        library_rows(studio),
        headers=COLUMNS,
        interactive=False,
        wrap=True,
        elem_id="voices-table",
    )
    with gr.Row():
        pick = gr.Dropdown(voice_ids(studio), value=None, label="Voice", scale=3, elem_id="voices-pick")
        refresh = gr.Button("Refresh", scale=1, elem_id="voices-refresh")
        preview = gr.Button("▶ Reference", scale=1, elem_id="voices-preview")
        refit = gr.Button("Fit again", scale=1, elem_id="voices-refit")
        delete = gr.Button("Delete", variant="stop", scale=1, elem_id="voices-delete")
    preview_audio = gr.Audio(
        label="Reference (cleaned)", type="filepath", interactive=False, elem_id="voices-preview-audio"
    )
    with gr.Row():
        new_name = gr.Textbox(label="Name", scale=4, elem_id="voices-rename-text")
        rename = gr.Button("Rename", scale=1, elem_id="voices-rename")
    with gr.Row():
        pick_transcript = gr.Textbox(label="Transcript", lines=2, scale=4, elem_id="voices-pick-transcript")
        pick_save = gr.Button("Save transcript", scale=1, elem_id="voices-pick-save")
    library_status = gr.Markdown(elem_id="voices-library-status")

    current = gr.State("")  # the voice made in this session
    task_id = gr.State("")

    view = FitView(
        current,
        task_id,
        status,
        transcript,
        warnings,
        curve,
        compare,
        fitted_audio,
        default_audio,
        try_audio,
        table,
        pick,
        cancel,
    )
    handlers = VoicesHandlers(studio, view)
    fit_outputs = view.outputs()
    create.click(
        handlers.on_create,
        [clip, voice_id, name, description, tags, language, mode],
        fit_outputs,
        concurrency_limit=2,
    )
    refit.click(handlers.on_refit, [pick, mode], fit_outputs, concurrency_limit=2)
    cancel.click(handlers.on_cancel, task_id, status)
    save_transcript.click(handlers.on_save_transcript, [current, transcript], status)
    speak.click(handlers.on_speak, [current, try_text], try_audio, concurrency_limit=2)
    # No triggers, no inputs: on page load.
    gr.on(None, lambda: handlers.on_library(None), None, [table, pick])
    refresh.click(handlers.on_library, pick, [table, pick])
    pick.change(handlers.on_pick, pick, [new_name, pick_transcript, preview_audio])
    preview.click(handlers.on_preview, pick, preview_audio)
    rename.click(handlers.on_rename, [pick, new_name], [table, library_status])
    pick_save.click(handlers.on_pick_save, [pick, pick_transcript], library_status)
    delete.click(handlers.on_delete, pick, [table, pick, library_status, preview_audio])
