"""The "Audiobook" tab: upload a book (EPUB, PDF, Markdown, text) -> its chapters to tick and retitle
-> narrator and character voices -> the "audiobook" task (as POST /api/v1/audiobook) with progress,
cancel, the M4B, chapter MP3s, subtitles and the quality report."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.core import Studio
from studio.services.audiobook.service import DEFAULT_NARRATOR
from studio.ui.audiobook_handlers import CHAPTER_COLUMNS, AudiobookHandlers
from studio.ui.common import all_voices, voice_dropdown

# The tab opens with this book read in (two short public-domain fables), so the button works at once.
EXAMPLE_BOOK = Path(__file__).resolve().parent.parent.parent / "assets" / "books" / "aesop.md"
EXAMPLE_CHARACTER_VOICE = "jf_nezumi"  # the fox's and the tortoise's words


def build_audiobook_tab(studio: Studio) -> None:
    voices = all_voices(studio)
    handlers = AudiobookHandlers(studio)
    example_about, example_chapters = handlers.read(str(EXAMPLE_BOOK))
    gr.Markdown(
        "Upload a book: its chapters are listed below. Untick the ones to leave out and edit a title "
        'if you like. Quoted speech (“…”, "…", 「…」) can have a voice of its own.'
    )
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(
                label="Book (.epub, .pdf, .md, .txt)",
                file_types=[".epub", ".pdf", ".md", ".txt"],
                type="filepath",
                value=str(EXAMPLE_BOOK),
                elem_id="audiobook-file",
            )
            about = gr.Markdown(example_about, elem_id="audiobook-about")
            table = gr.Dataframe(
                example_chapters,
                headers=CHAPTER_COLUMNS,
                datatype=["bool", "number", "str", "number"],
                interactive=True,
                wrap=True,
                elem_id="audiobook-chapters",
            )
        with gr.Column(scale=1):
            narrator = voice_dropdown(voices, DEFAULT_NARRATOR, "Narrator voice", "audiobook-voice")
            character = voice_dropdown(
                [("Same as the narrator", ""), *voices],
                EXAMPLE_CHARACTER_VOICE,
                "Character voice (quoted speech)",
                "audiobook-character-voice",
            )
            speed = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Speed", elem_id="audiobook-speed")
            quality = gr.Checkbox(
                True,
                label="Quality check: hear every sentence back and make a misspoken one again",
                elem_id="audiobook-quality",
            )
            with gr.Row():
                generate = gr.Button("Make the audiobook", variant="primary", elem_id="audiobook-generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="audiobook-cancel")
    status = gr.Markdown(elem_id="audiobook-status")
    with gr.Row():
        player = gr.Audio(label="Book (M4B)", interactive=False, elem_id="audiobook-player")
        downloads = gr.File(
            label="Downloads: M4B, chapter MP3s, subtitles, chapters",
            file_count="multiple",
            elem_id="audiobook-files",
        )
    report = gr.Markdown(elem_id="audiobook-quality-report")
    task_id = gr.State("")

    upload.change(handlers.read, upload, [about, table])
    generate.click(
        handlers.generate,
        [upload, table, narrator, character, speed, quality],
        [task_id, status, player, downloads, report],
    ).success(handlers.follow, task_id, [status, player, downloads, report])
    cancel.click(handlers.cancel, task_id, status)
