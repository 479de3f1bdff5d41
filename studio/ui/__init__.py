"""The Gradio UI: one Blocks app whose tabs call the same services as the REST API."""

from __future__ import annotations

import gradio as gr

from studio.core import Studio
from studio.ui.audiobook_tab import build_audiobook_tab
from studio.ui.dialogue_tab import build_dialogue_tab
from studio.ui.engines_tab import build_engines_tab
from studio.ui.gallery_tab import build_gallery_tab
from studio.ui.speech_tab import build_speech_tab
from studio.ui.training_tab import build_training_tab
from studio.ui.video_tab import build_video_tab
from studio.ui.voices_tab import build_voices_tab


def build_ui(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="Speech Studio") as blocks:
        gr.Markdown("# Speech Studio\nSpeech, dialogue, voices and talking video — on your own machine.")
        if studio.settings.space_note:  # on a shared Hugging Face Space: its limits and storage
            gr.Markdown(studio.settings.space_note, elem_id="space-note")
        with gr.Tab("Speech", id="speech"):
            build_speech_tab(studio)
        with gr.Tab("Dialogue", id="dialogue"):
            build_dialogue_tab(studio)
        with gr.Tab("Audiobook", id="audiobook"):
            build_audiobook_tab(studio)
        with gr.Tab("Voices & Cloning", id="voices"):
            build_voices_tab(studio)
        with gr.Tab("Voice gallery", id="gallery"):
            build_gallery_tab(studio)
        with gr.Tab("Training", id="training"):
            build_training_tab(studio)
        with gr.Tab("Video", id="video"):
            build_video_tab(studio)
        with gr.Tab("Engines", id="engines"):
            build_engines_tab(studio)
    return blocks
