"""The "Voices & Cloning" tab: a clip -> a library voice fitted to it, compared honestly, and the library.

Create reads the recorded or uploaded clip into the voice library (cleaned, transcribed, checked),
then fits a Kokoro style to it: "quick" in the request with a progress bar, "thorough" as a
`voice_fit` task polled here with its live similarity curve. The comparison plays a sentence the
fit never used in the fitted voice and in the nearest built-in voice, next to the fit report's
numbers. The library section lists, previews, renames, corrects and deletes voices.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import gradio as gr
import numpy as np
import pandas as pd

from studio import audio as audio_io
from studio.core import Studio
from studio.errors import StudioError
from studio.services.speech import SpeechRequest
from studio.services.voice_fit import HELD_OUT
from studio.services.voices import RATE, VoiceRecord
from studio.tasks.runner import TaskContext
from studio.tasks.store import TaskStatus
from studio.ui.common import curve_frame, language_dropdown, read_curve, ui_owner

COMPARE_SENTENCE = HELD_OUT[1]  # "Could you tell me how to get to the train station from here?"
TRY_SENTENCE = "Please bring the blue folder to the office tomorrow morning."
QUICK = ("Quick (about 30 s)", "quick")
THOROUGH = ("Thorough (minutes, runs as a task)", "thorough")
COLUMNS = ["id", "name", "usable", "similarity: fitted vs default", "duration (s)", "tags", "warnings"]
CURVE_COLUMNS = ("trial", "similarity")  # the fit's curve.json: [trial, best similarity so far] pairs
POLL_SECONDS = 0.5


def library_rows(studio: Studio) -> list[list[Any]]:
    return [
        [
            r.id,
            r.name,
            "yes" if r.usable else "no (not fitted)",
            similarity_summary(r),
            r.duration,
            ", ".join(r.tags),
            "; ".join(r.warnings) or "none",
        ]
        for r in studio.library.list()
    ]


def voice_ids(studio: Studio) -> list[str]:
    return [record.id for record in studio.library.list()]


def similarity_summary(record: VoiceRecord) -> str:
    fit = record.fit
    if "similarity" not in fit:
        return "—"
    return f"{fit['similarity']:.3f} vs {fit['baseline_similarity']:.3f} ({fit['baseline_voice']})"


def comparison(record: VoiceRecord, thorough_allowed: bool = True) -> str:
    """The fit report's held-out numbers, fitted voice next to the nearest built-in one."""
    fit = record.fit
    text = (
        f"**Similarity to your clip:** fitted **{fit['similarity']:.3f}** vs default "
        f"`{fit['baseline_voice']}` {fit['baseline_similarity']:.3f}; "
        f"**word error:** fitted {fit['wer']:.0%} vs default {fit['baseline_wer']:.0%}\n\n"
        f"Measured on sentences the fit never heard ({fit['mode']} fit: {fit['trials']} trials in "
        f"{fit['seconds']:.0f} s, starting from `{fit['start_voice']}`). Similarity is the speaker-embedding "
        "cosine to your clip (1.0 = the same voice); word error is what the bundled Whisper misheard."
    )
    if fit["similarity"] > fit["baseline_similarity"]:
        return text
    advice = "A longer, cleaner clip of one speaker also helps."
    if thorough_allowed and fit["mode"] == "quick":
        advice = "Pick it in the library below and fit it again with *Thorough* (a longer search). " + advice
    return (
        f"{text}\n\n**The fitted voice is not closer to your clip than `{fit['baseline_voice']}`.** {advice}"
    )


def warnings_text(record: VoiceRecord) -> str:
    if not record.warnings:
        return "No quality problems found in the clip."
    return "**Check the clip:**\n" + "\n".join(f"- {w}" for w in record.warnings)


class _ProgressContext:
    """What `CloningService.fit_voice` needs of a task context, reporting to a Gradio progress bar."""

    def __init__(self, folder: Path, progress: gr.Progress) -> None:
        self.folder = folder
        self._progress = progress

    def progress(self, percent: float, step: str | None = None, force: bool = False) -> None:
        self._progress(percent / 100, desc=step or "fitting")

    def log(self, message: str) -> None:
        pass


def build_voices_tab(studio: Studio) -> None:
    outputs = studio.settings.data_dir / "ui_outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    max_bytes = studio.settings.max_upload_bytes

    gr.Markdown(
        "Record or upload 5-30 s of one person speaking clearly. The studio cleans and transcribes it, "
        "then fits a voice to it and shows how close it got, next to the nearest built-in voice."
    )
    with gr.Row():
        with gr.Column(scale=3):
            clip = gr.Audio(
                sources=["upload", "microphone"],
                type="filepath",
                label="Reference clip (wav, mp3, flac, m4a, ogg)",
                elem_id="voices-clip",
            )
            with gr.Row():
                voice_id = gr.Textbox(
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

    def picker(chosen: str | None = None) -> gr.Dropdown:
        ids = voice_ids(studio)
        return gr.Dropdown(choices=ids, value=chosen if chosen in ids else None)

    def write_wav(audio: np.ndarray, rate: int, stem: str) -> str:
        path = outputs / f"{stem}-{uuid.uuid4().hex[:10]}.wav"
        path.write_bytes(audio_io.encode(audio, rate, "wav"))
        return str(path)

    def speak_as(voice: str, text: str, stem: str) -> str:
        speech = studio.speech.synthesize(SpeechRequest(text=text, voice=voice))
        return write_wav(speech.audio, speech.sample_rate, stem)

    def finished(record: VoiceRecord, points: pd.DataFrame) -> dict[Any, Any]:
        """Updates once a fit is done: the comparison, both players, the refreshed library."""
        fitted = speak_as(record.id, COMPARE_SENTENCE, f"voice-{record.id}")
        default = speak_as(record.fit["baseline_voice"], COMPARE_SENTENCE, "voice-default")
        return {
            task_id: "",
            cancel: gr.Button(visible=False),
            status: f"`{record.id}` is ready: use it in any tab or the API as voice `{record.id}`.",
            curve: points,
            compare: comparison(record, studio.settings.allow_thorough_fit),
            fitted_audio: fitted,
            default_audio: default,
            table: library_rows(studio),
            pick: picker(record.id),
        }

    def on_create(
        path: str | None,
        new_id: str,
        new_name: str,
        about: str,
        tag_text: str,
        clip_language: str,
        fit_mode: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[dict[Any, Any]]:
        if not path:
            raise gr.Error("Record or upload a clip first.")
        clip_file = Path(path)
        progress(0.0, desc="cleaning and transcribing the clip")
        try:
            record = studio.library.add(
                new_id,
                clip_file.read_bytes(),
                clip_file.name,
                max_bytes,
                new_name,
                about,
                tag_text.split(","),
                language=studio.speech.language(clip_language),
            )
        except StudioError as error:
            raise gr.Error(error.message) from None
        yield from fit_flow(record, fit_mode, ui_owner(request), progress)

    def on_refit(
        voice: str | None, fit_mode: str, request: gr.Request, progress: gr.Progress = gr.Progress()
    ) -> Iterator[dict[Any, Any]]:
        if not voice:
            raise gr.Error("Pick a voice first.")
        try:
            record = studio.library.require(voice)
        except StudioError as error:
            raise gr.Error(error.message) from None
        yield from fit_flow(record, fit_mode, ui_owner(request), progress)

    def fit_flow(
        record: VoiceRecord, fit_mode: str, owner: str, progress: gr.Progress
    ) -> Iterator[dict[Any, Any]]:
        """Fit a library voice: quick in this request, thorough as a task polled for its progress and curve."""
        yield {
            current: record.id,
            task_id: "",
            status: f"`{record.id}`: {record.duration:.1f} s of speech kept; fitting ({fit_mode})…",
            transcript: record.transcript,
            warnings: warnings_text(record),
            curve: curve_frame([], columns=CURVE_COLUMNS),
            compare: "",
            fitted_audio: None,
            default_audio: None,
            try_audio: None,
            table: library_rows(studio),
            pick: picker(record.id),
        }
        try:
            if fit_mode == "quick":
                folder = outputs / f"fit-{uuid.uuid4().hex[:10]}"
                folder.mkdir()
                # fit_voice reports through a task context; this one drives the progress bar instead.
                context = cast(TaskContext, _ProgressContext(folder, progress))
                record = studio.cloning.fit_voice(record.id, "quick", context)
                yield finished(record, read_curve(folder / "curve.json", columns=CURVE_COLUMNS))
                return
            task = studio.runner.submit(
                "voice_fit", f"fit {record.id} (UI)", {"voice_id": record.id, "mode": fit_mode}, owner
            )
            curve_file = studio.store.folder(task.task_id) / "curve.json"
            while not task.status.finished:
                step = task.current_step or "waiting for a worker"
                eta = f", about {task.eta_seconds:.0f} s left" if task.eta_seconds else ""
                yield {
                    task_id: task.task_id,
                    cancel: gr.Button(visible=True),
                    status: f"**{task.progress:.0f}%** · {step}{eta} (task `{task.task_id}`)",
                    curve: read_curve(curve_file, columns=CURVE_COLUMNS),
                }
                time.sleep(POLL_SECONDS)
                task = studio.store.get(task.task_id) or task
            if task.status != TaskStatus.COMPLETED:
                reason = f": {task.error_message}" if task.error_message else ""
                yield {
                    task_id: "",
                    cancel: gr.Button(visible=False),
                    status: f"**{task.status.value}**{reason}. `{record.id}` is "
                    "kept but not fitted: pick it in the library below to fit it again or delete it.",
                    curve: read_curve(curve_file, columns=CURVE_COLUMNS),
                    table: library_rows(studio),
                    pick: picker(record.id),
                }
                return
            yield finished(studio.library.require(record.id), read_curve(curve_file, columns=CURVE_COLUMNS))
        except StudioError as error:
            raise gr.Error(error.message) from None

    def on_cancel(running: str) -> str:
        if not running:
            return (
                "Nothing to cancel: only a thorough fit runs as a task (a quick one finishes in about 30 s)."
            )
        try:
            studio.runner.cancel(running)
        except StudioError as error:
            raise gr.Error(error.message) from None
        return "Cancelling…"

    def on_save_transcript(voice: str, text: str) -> str:
        if not voice:
            raise gr.Error("Create a voice first.")
        try:
            studio.library.update(voice, transcript=text.strip())
        except StudioError as error:
            raise gr.Error(error.message) from None
        return f"Transcript of `{voice}` saved."

    def on_speak(voice: str, text: str) -> str:
        if not voice:
            raise gr.Error("Create a voice first: the sentence is spoken in the voice you make here.")
        try:
            return speak_as(voice, text, f"try-{voice}")
        except StudioError as error:
            raise gr.Error(error.message) from None

    def on_library(chosen: str | None) -> tuple[list[list[Any]], gr.Dropdown]:
        return library_rows(studio), picker(chosen)

    def on_pick(voice: str | None) -> tuple[str, str, None]:
        record = studio.library.get(voice) if voice else None
        return (record.name, record.transcript, None) if record else ("", "", None)

    def on_preview(voice: str | None) -> str:
        if not voice:
            raise gr.Error("Pick a voice first.")
        try:
            return write_wav(studio.library.reference(voice), RATE, f"reference-{voice}")
        except StudioError as error:
            raise gr.Error(error.message) from None

    def on_rename(voice: str | None, text: str) -> tuple[list[list[Any]], str]:
        if not voice:
            raise gr.Error("Pick a voice first.")
        if not text.strip():
            raise gr.Error("Type the new name first.")
        try:
            record = studio.library.update(voice, name=text.strip()[:80])
        except StudioError as error:
            raise gr.Error(error.message) from None
        return library_rows(studio), f"`{voice}` is now called **{record.name}**."

    def on_pick_save(voice: str | None, text: str) -> str:
        if not voice:
            raise gr.Error("Pick a voice first.")
        try:
            studio.library.update(voice, transcript=text.strip())
        except StudioError as error:
            raise gr.Error(error.message) from None
        return f"Transcript of `{voice}` saved."

    def on_delete(voice: str | None) -> tuple[list[list[Any]], gr.Dropdown, str, None]:
        if not voice:
            raise gr.Error("Pick a voice first.")
        try:
            studio.library.delete(voice)
        except StudioError as error:
            raise gr.Error(error.message) from None
        return library_rows(studio), picker(None), f"Deleted `{voice}`.", None

    fit_outputs = [
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
    ]
    create.click(
        on_create, [clip, voice_id, name, description, tags, language, mode], fit_outputs, concurrency_limit=2
    )
    refit.click(on_refit, [pick, mode], fit_outputs, concurrency_limit=2)
    cancel.click(on_cancel, task_id, status)
    save_transcript.click(on_save_transcript, [current, transcript], status)
    speak.click(on_speak, [current, try_text], try_audio, concurrency_limit=2)
    gr.on(None, lambda: on_library(None), None, [table, pick])  # no triggers, no inputs: on page load
    refresh.click(on_library, pick, [table, pick])
    pick.change(on_pick, pick, [new_name, pick_transcript, preview_audio])
    preview.click(on_preview, pick, preview_audio)
    rename.click(on_rename, [pick, new_name], [table, library_status])
    pick_save.click(on_pick_save, [pick, pick_transcript], library_status)
    delete.click(on_delete, pick, [table, pick, library_status, preview_audio])
