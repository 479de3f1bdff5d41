"""The "Speech" tab: text, engine, voice, speed, pitch, format -> a playable, downloadable file."""

from __future__ import annotations

import uuid

import gradio as gr
import numpy as np

from engines.base import Capability, queue_listener
from engines.text import split_sentences
from studio import audio as audio_io
from studio.core import Studio
from studio.errors import StudioError
from studio.services.speech import DEFAULT_ENGINE, DEFAULT_VOICE, SpeechRequest
from studio.ui.common import language_dropdown, ui_owner

EXAMPLE = "Welcome to Speech Studio. Type any text here, pick a voice, and press Generate."


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
                    info="Kokoro voices blend: `jf_alpha*0.7+jm_kumo*0.3`",
                    elem_id="speech-voice",
                )
                language = language_dropdown(
                    "speech-language",
                    info="Auto reads Chinese, Japanese and English sentences each in its own language",
                )
            with gr.Row():
                speed = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Speed")
                pitch = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Pitch")
                fmt = gr.Dropdown(["wav", "mp3", "flac", "ogg"], value="wav", label="Format")
            generate = gr.Button("Generate", variant="primary", elem_id="speech-generate")
        with gr.Column(scale=2):
            player = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="speech-audio")
            info = gr.Markdown(elem_id="speech-info")

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

    engine.change(on_engine, engine, voice)
    generate.click(
        on_generate, [text, engine, voice, language, speed, pitch, fmt], [player, info], concurrency_limit=2
    )
