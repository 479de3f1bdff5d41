"""What the "Voices & Cloning" tab does on each event (`voices_tab.py` lays it out and wires these): a
quick fit in the request, a thorough one as a polled `voice_fit` task, the comparison, the library."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from studio import audio as audio_io
from studio.core import Studio
from studio.services.cloning import VoiceFitConfig
from studio.services.speech import SpeechRequest
from studio.services.voice_fit import HELD_OUT
from studio.services.voices import RATE, VoiceRecord
from studio.tasks.records import TaskStatus
from studio.ui.common import (
    curve_frame,
    shown_errors,
    task_curve,
    task_failure,
    task_progress,
    ui_output,
    ui_owner,
    watch_task,
)

COMPARE_SENTENCE = HELD_OUT[1]  # "Could you tell me how to get to the train station from here?"
COLUMNS = ["id", "name", "usable", "similarity: fitted vs default", "duration (s)", "tags", "warnings"]
CURVE_COLUMNS = ("trial", "similarity")  # the fit's curve.json: [trial, best similarity so far] pairs


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


@dataclass
class FitView:
    """The components a fit updates (Create voice, Fit again), in the order the events list them."""

    current: gr.State  # the voice made in this session
    task_id: gr.State  # the thorough fit's task, while it runs
    status: gr.Markdown
    transcript: gr.Textbox
    warnings: gr.Markdown
    curve: gr.LinePlot
    compare: gr.Markdown
    fitted_audio: gr.Audio
    default_audio: gr.Audio
    try_audio: gr.Audio
    table: gr.Dataframe
    pick: gr.Dropdown
    cancel: gr.Button

    def outputs(self) -> list[Any]:
        return [getattr(self, field.name) for field in fields(self)]


class VoicesHandlers:
    """One method per event of the tab; `view` holds the components a fit's updates go to."""

    def __init__(self, studio: Studio, view: FitView) -> None:
        self.studio = studio
        self.view = view

    def picker(self, chosen: str | None = None) -> gr.Dropdown:
        ids = voice_ids(self.studio)
        return gr.Dropdown(choices=ids, value=chosen if chosen in ids else None)

    def write_wav(self, audio: np.ndarray, rate: int, stem: str) -> str:
        path = ui_output(self.studio, stem, "wav")
        path.write_bytes(audio_io.encode(audio, rate, "wav"))
        return str(path)

    def speak_as(self, voice: str, text: str, stem: str) -> str:
        speech = self.studio.speech.synthesize(SpeechRequest(text=text, voice=voice))
        return self.write_wav(speech.audio, speech.sample_rate, stem)

    def finished(self, record: VoiceRecord, points: pd.DataFrame) -> dict[Any, Any]:
        """Updates once a fit is done: the comparison, both players, the refreshed library."""
        view = self.view
        fitted = self.speak_as(record.id, COMPARE_SENTENCE, f"voice-{record.id}")
        default = self.speak_as(record.fit["baseline_voice"], COMPARE_SENTENCE, "voice-default")
        return {
            view.task_id: "",
            view.cancel: gr.Button(visible=False),
            view.status: f"`{record.id}` is ready: use it in any tab or the API as voice `{record.id}`.",
            view.curve: points,
            view.compare: comparison(record, self.studio.settings.allow_thorough_fit),
            view.fitted_audio: fitted,
            view.default_audio: default,
            view.table: library_rows(self.studio),
            view.pick: self.picker(record.id),
        }

    # ---- fitting -------------------------------------------------------------------------------
    def on_create(
        self,
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
        with shown_errors():
            record = self.studio.library.add(
                new_id,
                clip_file.read_bytes(),
                clip_file.name,
                self.studio.settings.max_upload_bytes,
                new_name,
                about,
                tag_text.split(","),
                language=self.studio.speech.language(clip_language),
            )
        yield from self.fit_flow(record, fit_mode, ui_owner(request), progress)

    def on_refit(
        self, voice: str | None, fit_mode: str, request: gr.Request, progress: gr.Progress = gr.Progress()
    ) -> Iterator[dict[Any, Any]]:
        if not voice:
            raise gr.Error("Pick a voice first.")
        with shown_errors():
            record = self.studio.library.require(voice)
        yield from self.fit_flow(record, fit_mode, ui_owner(request), progress)

    def fit_flow(
        self, record: VoiceRecord, fit_mode: str, owner: str, progress: gr.Progress
    ) -> Iterator[dict[Any, Any]]:
        """Fit a library voice: quick in this request, thorough as a task polled for its progress and curve."""
        view = self.view
        yield {
            view.current: record.id,
            view.task_id: "",
            view.status: f"`{record.id}`: {record.duration:.1f} s of speech kept; fitting ({fit_mode})…",
            view.transcript: record.transcript,
            view.warnings: warnings_text(record),
            view.curve: curve_frame([], columns=CURVE_COLUMNS),
            view.compare: "",
            view.fitted_audio: None,
            view.default_audio: None,
            view.try_audio: None,
            view.table: library_rows(self.studio),
            view.pick: self.picker(record.id),
        }
        with shown_errors():
            if fit_mode == "quick":
                yield from self.quick_fit(record, progress)
            else:
                yield from self.thorough_fit(record, fit_mode, owner)

    def quick_fit(self, record: VoiceRecord, progress: gr.Progress) -> Iterator[dict[Any, Any]]:
        """The fit in this request, each trial on the progress bar; its curve shown once it is done."""
        curve: list[tuple[int, float]] = []

        def report(percent: float, step: str, points: list[tuple[int, float]]) -> None:
            curve[:] = points
            progress(percent / 100, desc=step or "fitting")

        record = self.studio.cloning.quick_fit(record.id, report)
        yield self.finished(record, curve_frame(curve, columns=CURVE_COLUMNS))

    def thorough_fit(self, record: VoiceRecord, fit_mode: str, owner: str) -> Iterator[dict[Any, Any]]:
        """The fit as a `voice_fit` task, followed until it ends."""
        view = self.view
        config = VoiceFitConfig(voice_id=record.id, mode=fit_mode)
        submitted = self.studio.runner.submit("voice_fit", f"fit {record.id} (UI)", config, owner)
        for task in watch_task(self.studio, submitted):  # the last one yielded has finished
            if task.status.finished:
                break
            yield {
                view.task_id: task.task_id,
                view.cancel: gr.Button(visible=True),
                view.status: f"{task_progress(task, 'waiting for a worker')} (task `{task.task_id}`)",
                view.curve: task_curve(self.studio, task.task_id, columns=CURVE_COLUMNS),
            }
        points = task_curve(self.studio, task.task_id, columns=CURVE_COLUMNS)
        if task.status != TaskStatus.COMPLETED:
            yield {
                view.task_id: "",
                view.cancel: gr.Button(visible=False),
                view.status: f"{task_failure(task)}. `{record.id}` is "
                "kept but not fitted: pick it in the library below to fit it again or delete it.",
                view.curve: points,
                view.table: library_rows(self.studio),
                view.pick: self.picker(record.id),
            }
            return
        yield self.finished(self.studio.library.require(record.id), points)

    def on_cancel(self, running: str) -> str:
        if not running:
            return (
                "Nothing to cancel: only a thorough fit runs as a task (a quick one finishes in about 30 s)."
            )
        with shown_errors():
            self.studio.runner.cancel(running)
        return "Cancelling…"

    # ---- this session's voice ------------------------------------------------------------------
    def on_save_transcript(self, voice: str, text: str) -> str:
        return self.save_transcript(voice, text, "Create a voice first.")

    def on_speak(self, voice: str, text: str) -> str:
        if not voice:
            raise gr.Error("Create a voice first: the sentence is spoken in the voice you make here.")
        with shown_errors():
            return self.speak_as(voice, text, f"try-{voice}")

    # ---- the library ---------------------------------------------------------------------------
    def on_library(self, chosen: str | None) -> tuple[list[list[Any]], gr.Dropdown]:
        return library_rows(self.studio), self.picker(chosen)

    def on_pick(self, voice: str | None) -> tuple[str, str, None]:
        record = self.studio.library.get(voice) if voice else None
        return (record.name, record.transcript, None) if record else ("", "", None)

    def on_preview(self, voice: str | None) -> str:
        if not voice:
            raise gr.Error("Pick a voice first.")
        with shown_errors():
            return self.write_wav(self.studio.library.reference(voice), RATE, f"reference-{voice}")

    def on_rename(self, voice: str | None, text: str) -> tuple[list[list[Any]], str]:
        if not voice:
            raise gr.Error("Pick a voice first.")
        if not text.strip():
            raise gr.Error("Type the new name first.")
        with shown_errors():
            record = self.studio.library.update(voice, name=text.strip()[:80])
        return library_rows(self.studio), f"`{voice}` is now called **{record.name}**."

    def on_pick_save(self, voice: str | None, text: str) -> str:
        return self.save_transcript(voice, text, "Pick a voice first.")

    def on_delete(self, voice: str | None) -> tuple[list[list[Any]], gr.Dropdown, str, None]:
        if not voice:
            raise gr.Error("Pick a voice first.")
        with shown_errors():
            self.studio.library.delete(voice)
        return library_rows(self.studio), self.picker(None), f"Deleted `{voice}`.", None

    def save_transcript(self, voice: str | None, text: str, missing: str) -> str:
        """Save a voice's corrected transcript; `missing` is the message when no voice is chosen."""
        if not voice:
            raise gr.Error(missing)
        with shown_errors():
            self.studio.library.update(voice, transcript=text.strip())
        return f"Transcript of `{voice}` saved."
