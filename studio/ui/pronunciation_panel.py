"""The Speech tab's pronunciation lexicon editor: the entries as a table, add/replace/delete one,
and "try it" to hear a word in the tab's voice. The handlers call the lexicon and speech services."""

from __future__ import annotations

import gradio as gr
import numpy as np

from studio.core import Studio
from studio.errors import StudioError
from studio.services.pronunciation import LEXICON_LANGUAGES
from studio.services.speech import SpeechRequest

COLUMNS = ["word", "language", "phonemes", "respelling"]
HELP = (
    "How words are said, per language (**en** is both English variants). **Phonemes** (IPA, e.g. "
    "`təmˈɑːtoʊ`) are used by Kokoro and Piper; a **respelling** (e.g. `win` for *Nguyen*) is said "
    "instead of the word by other engines, and by those two when no phonemes are given. In any text: "
    "`[Nguyen](/wɪn/)` and `[pause:1.5s]`, or SSML starting with `<speak>`."
)


def build_pronunciation_panel(studio: Studio, engine: gr.Dropdown, voice: gr.Dropdown) -> None:
    """An accordion holding the editor; "try it" speaks with the tab's `engine` and `voice`."""
    lexicon = studio.pronunciations

    def rows() -> list[list[str]]:
        return [[e.word, e.language, e.phonemes or "", e.respelling or ""] for e in lexicon.list()]

    with gr.Accordion("Pronunciation lexicon", open=False, elem_id="pronunciation-panel"):
        gr.Markdown(HELP)
        table = gr.Dataframe(
            value=rows, headers=COLUMNS, interactive=False, elem_id="pronunciation-table", wrap=True
        )
        with gr.Row():
            word = gr.Textbox(label="Word", elem_id="pronunciation-word")
            language = gr.Dropdown(list(LEXICON_LANGUAGES), value="en", label="Language")
            phonemes = gr.Textbox(label="Phonemes (IPA)", elem_id="pronunciation-phonemes")
            respelling = gr.Textbox(label="Respelling", elem_id="pronunciation-respelling")
        with gr.Row():
            save = gr.Button("Save", variant="primary", elem_id="pronunciation-save")
            delete = gr.Button("Delete", elem_id="pronunciation-delete")
            try_it = gr.Button("Try it", elem_id="pronunciation-try")
        heard = gr.Audio(label="Try it", type="numpy", interactive=False, elem_id="pronunciation-audio")
        status = gr.Markdown(elem_id="pronunciation-status")

    def on_save(word: str, language: str, phonemes: str, respelling: str) -> tuple[list[list[str]], str]:
        ipa = phonemes.strip().strip("/")  # "/wɪn/" as dictionaries write it
        try:
            entry = lexicon.put(word.strip(), language, ipa or None, respelling.strip() or None)
        except StudioError as error:
            raise gr.Error(error.message) from None
        return rows(), f"Saved **{entry.word}** ({entry.language})."

    def on_delete(word: str, language: str) -> tuple[list[list[str]], str]:
        try:
            deleted = lexicon.delete(word.strip(), language)
        except StudioError as error:
            raise gr.Error(error.message) from None
        return rows(), f"Deleted **{word.strip()}** ({language})." if deleted else "No such entry."

    def on_select(event: gr.SelectData, shown: list[list[str]] | object) -> tuple[str, str, str, str]:
        values = table_rows(shown)
        row = values[event.index[0]] if values and event.index[0] < len(values) else ["", "en", "", ""]
        return row[0], row[1], row[2], row[3]

    def on_try(word: str, language: str, engine: str, voice: str) -> tuple[int, np.ndarray]:
        spoken_in = "en-us" if language == "en" else language
        try:
            speech = studio.speech.synthesize(
                SpeechRequest(text=word.strip(), voice=voice, engine=engine, language=spoken_in)
            )
        except StudioError as error:
            raise gr.Error(error.message) from None
        return speech.sample_rate, speech.audio

    save.click(on_save, [word, language, phonemes, respelling], [table, status])
    delete.click(on_delete, [word, language], [table, status])
    table.select(on_select, [table], [word, language, phonemes, respelling])
    try_it.click(on_try, [word, language, engine, voice], heard, concurrency_limit=2)


def table_rows(shown: object) -> list[list[str]]:
    """The table's rows as lists, whether Gradio hands them over as a DataFrame or as lists."""
    if hasattr(shown, "values"):
        return [[str(cell) for cell in row] for row in shown.values.tolist()]  # type: ignore[union-attr]
    return [[str(cell) for cell in row] for row in shown] if isinstance(shown, list) else []
