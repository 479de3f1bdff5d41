"""The "Voice gallery" tab: every voice with its language, gender, engine and license, a filter by
language, and a preview of the voice picked in the table (made once, then played from disk)."""

from __future__ import annotations

import gradio as gr

from engines.text import LANGUAGE_NAMES
from studio.core import Studio
from studio.errors import StudioError

COLUMNS = ["voice id", "name", "language", "gender", "engine", "license", "kind"]
ALL = "all"


def gallery_rows(studio: Studio, language: str = ALL) -> list[list[str]]:
    return [
        [v.id, v.name, v.language_name, v.gender or "—", v.engine, v.license, v.kind]
        for v in studio.gallery.voices(None if language == ALL else language)
    ]


def build_gallery_tab(studio: Studio) -> None:
    gr.Markdown(
        "Every voice you can use here, in every tab and route. Pick a row to hear it, in the language "
        "chosen above where it speaks it (a first preview takes a moment; after that it plays at once). "
        "Voice ids work as `voice` in the API."
    )
    choices = [("All languages", ALL)] + [
        (LANGUAGE_NAMES.get(code, code), code) for code in studio.gallery.languages()
    ]
    with gr.Row():
        language = gr.Dropdown(choices, value=ALL, label="Language", scale=1, elem_id="gallery-language")
        refresh = gr.Button("Refresh", scale=0, elem_id="gallery-refresh")
    table = gr.Dataframe(
        gallery_rows(studio), headers=COLUMNS, interactive=False, wrap=True, elem_id="gallery-table"
    )
    with gr.Row():
        picked = gr.Markdown("Pick a voice in the table.", elem_id="gallery-picked")
        audio = gr.Audio(
            label="Preview", type="filepath", interactive=False, autoplay=True, elem_id="gallery-audio"
        )

    def preview(code: str, event: gr.SelectData) -> tuple[str, str | None]:
        voice_id = str(event.row_value[0])
        try:
            return f"**{voice_id}**", str(studio.gallery.preview(voice_id, None if code == ALL else code))
        except StudioError as error:
            raise gr.Error(error.message) from None

    language.change(lambda code: gallery_rows(studio, code), language, table)
    refresh.click(lambda code: gallery_rows(studio, code), language, table)
    table.select(preview, language, [picked, audio], concurrency_limit=2)
