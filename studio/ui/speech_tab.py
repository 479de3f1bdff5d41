"""The "Speech" tab: text, engine, voice, speed, pitch, format -> a playable, downloadable file."""

from __future__ import annotations

import json
import uuid
from typing import Any

import gradio as gr
import numpy as np

from engines.base import Capability, queue_listener
from engines.text import split_sentences
from studio import audio as audio_io
from studio.core import Studio
from studio.errors import StudioError
from studio.services.quality import REPORT_COLUMNS, report_rows
from studio.services.speech import DEFAULT_ENGINE, DEFAULT_VOICE, SpeechRequest
from studio.ui.common import follow_task, language_dropdown, task_file, ui_owner
from studio.ui.pronunciation_panel import build_pronunciation_panel

EXAMPLE = "Welcome to Speech Studio. Type any text here, pick a voice, and press Generate."
WORD_COLUMNS = ["word", "spoken", "start (s)", "end (s)"]


def voice_choices(studio: Studio, engine: str) -> list[tuple[str, str]]:
    return [(f"{v.name} ({v.id})", v.id) for v in studio.registry.engine(engine).voices()]


def build_speech_tab(studio: Studio) -> None:
    engines = [(e.info.display_name, e.info.name) for e in studio.registry.available(Capability.TTS)]
    outputs = studio.settings.data_dir / "ui_outputs"
    outputs.mkdir(parents=True, exist_ok=True)

    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Text", value=EXAMPLE, lines=6, max_lines=20, elem_id="speech-text")
            with gr.Row():
                engine = gr.Dropdown(engines, value=DEFAULT_ENGINE, label="Engine", elem_id="speech-engine")
                voice = gr.Dropdown(
                    voice_choices(studio, DEFAULT_ENGINE),
                    value=DEFAULT_VOICE,
                    label="Voice",
                    allow_custom_value=True,
                    elem_id="speech-voice",
                )
                language = language_dropdown(
                    "speech-language",
                    info="Auto reads each sentence in its own language (Latin script: the voice's)",
                )
            # Not the dropdown's `info`: Gradio drops the asterisks from it.
            gr.Markdown(
                "Blend Kokoro voices by typing one like `jf_alpha*0.7+jm_kumo*0.3`.",
                elem_id="speech-blend-hint",
            )
            with gr.Row():
                speed = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Speed")
                pitch = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Pitch")
                fmt = gr.Dropdown(["wav", "mp3", "flac", "ogg"], value="wav", label="Format")
            check = gr.Checkbox(
                False,
                label="Check every sentence (ASR) and re-take bad ones",
                info="runs as a task: each sentence is heard back and made again while words are missing",
                elem_id="speech-quality",
            )
            generate = gr.Button("Generate", variant="primary", elem_id="speech-generate")
            build_pronunciation_panel(studio, engine, voice)
        with gr.Column(scale=2):
            player = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="speech-audio")
            info = gr.Markdown(elem_id="speech-info")
            quality = gr.Dataframe(
                headers=REPORT_COLUMNS,
                label="Quality check: what the ASR heard in each sentence",
                visible=False,
                interactive=False,
                wrap=True,
                elem_id="speech-quality-report",
            )
            with gr.Accordion("Word timings", open=False, elem_id="speech-words"):
                timed = gr.Button("Generate with word timings", elem_id="speech-words-generate")
                words = gr.Dataframe(
                    headers=WORD_COLUMNS, interactive=False, wrap=True, elem_id="speech-words-table"
                )
                word_files = gr.File(label="words.json and phrases.srt", file_count="multiple")

    def on_engine(name: str) -> gr.Dropdown:
        choices = voice_choices(studio, name)
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    def on_generate(
        text: str,
        engine: str,
        voice: str,
        language: str,
        speed: float,
        pitch: float,
        fmt: str,
        http: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, str]:
        request = SpeechRequest(
            text=text,
            voice=voice,
            engine=engine,
            speed=speed,
            pitch=pitch,
            language=language,
            requester=ui_owner(http),
        )
        total = max(len(split_sentences(text or "")), 1)
        pieces, rate = [], 0
        progress(0.0, desc="loading the engine")

        def waiting(ahead: int) -> None:  # while the engine serves others first (see RunQueue)
            progress(len(pieces) / total, desc=f"in the engine's queue: {ahead} ahead of you")

        listening = queue_listener.set(waiting)
        try:
            for chunk in studio.speech.stream(request):
                pieces.append(chunk.audio)
                rate = chunk.sample_rate
                progress((chunk.index + 1) / total, desc=f"sentence {chunk.index + 1} of {total}")
        except StudioError as error:
            raise gr.Error(error.message) from None
        finally:
            queue_listener.reset(listening)
        audio = np.concatenate(pieces)
        path = outputs / f"speech-{uuid.uuid4().hex[:10]}.{fmt}"
        path.write_bytes(audio_io.encode(audio, rate, fmt))
        name = studio.registry.engine(engine).info.display_name
        return str(path), f"{len(audio) / rate:.1f} s of audio from **{name}**, voice `{voice}`"

    def on_checked(
        config: dict[str, Any], owner: str, progress: gr.Progress
    ) -> tuple[str | None, str, gr.Dataframe]:
        """`config` as a "speech" task with the quality gate: its file, a summary and the report."""
        try:  # the task reads the mapping as its SpeechConfig: a bad field is a BadInput naming it
            task = studio.runner.submit("speech", "speech (UI, checked)", config, owner)
        except StudioError as error:
            raise gr.Error(error.message) from None
        line = ""
        for line, done in follow_task(studio, task.task_id):
            if done is None:
                progress(None, desc=line.replace("**", ""))
                continue
            quality, report = done.result["quality"], studio.store.file_path(task.task_id, "quality.json")
            summary = (
                f"{done.result['duration']:.1f} s of audio: {quality['checked']} sentences heard back, "
                f"{quality['retaken']} made again, {len(quality['failing'])} still wrong"
            )
            rows = report_rows(json.loads(report.read_text("utf-8"))) if report else []
            audio = task_file(studio, task.task_id, f"speech.{config['format']}")
            return audio, summary, gr.Dataframe(rows, visible=True)
        raise gr.Error(line.replace("**", ""))

    def on_click(
        text: str,
        engine: str,
        voice: str,
        language: str,
        speed: float,
        pitch: float,
        fmt: str,
        checked: bool,
        http: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str | None, str, gr.Dataframe]:
        if not checked:
            made = on_generate(text, engine, voice, language, speed, pitch, fmt, http, progress)
            return (*made, gr.Dataframe(visible=False))
        config = {"text": text, "voice": voice, "engine": engine, "speed": speed, "pitch": pitch}
        config |= {"language": language, "format": fmt, "quality_check": True}
        return on_checked(config, ui_owner(http), progress)

    def on_timed(
        text: str,
        engine: str,
        voice: str,
        language: str,
        speed: float,
        pitch: float,
        fmt: str,
        http: gr.Request,
    ) -> tuple[str, str, list[list[Any]], list[str]]:
        """The speech with each word's times: the audio, a table, words.json and phrases.srt."""
        request = SpeechRequest(text, voice, engine, speed, pitch, language, ui_owner(http))
        try:
            made, _ = studio.speech.captioned(request, fmt)
        except StudioError as error:
            raise gr.Error(error.message) from None
        name = f"speech-{uuid.uuid4().hex[:10]}"
        audio, timings, phrases = (outputs / f"{name}.{ext}" for ext in (fmt, "words.json", "srt"))
        audio.write_bytes(made.data)
        timings.write_text(made.words_json(), encoding="utf-8")
        phrases.write_text(made.srt, encoding="utf-8")
        rows = [[w["word"], w["spoken"], w["start"], w["end"]] for w in made.word_list()]
        note = f"{made.duration:.1f} s of audio, {len(rows)} words timed" if rows else "no word times here"
        return str(audio), note, rows, [str(timings), str(phrases)]

    engine.change(on_engine, engine, voice)
    timed.click(
        on_timed,
        [text, engine, voice, language, speed, pitch, fmt],
        [player, info, words, word_files],
        concurrency_limit=2,
    )
    generate.click(
        on_click,
        [text, engine, voice, language, speed, pitch, fmt, check],
        [player, info, quality],
        concurrency_limit=2,
    )
