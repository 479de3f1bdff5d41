"""The Audiobook tab's events: read an uploaded book into its chapter table, start the "audiobook"
task with the chapters ticked and their titles as edited, follow it, show its files and the quality
gate's report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from studio.core import Studio
from studio.services.audiobook import AudiobookConfig
from studio.ui.common import cancel_task, follow_task, shown_errors, task_file, task_files, ui_owner

CHAPTER_COLUMNS = ["make", "#", "title", "characters"]
RESULT_FILES = ("book.m4b", "chapters/*.mp3", "book.srt", "book.vtt", "chapters.json")


def chapter_frame(rows: list[list[Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=CHAPTER_COLUMNS)


def book_upload(path: str | None) -> tuple[bytes, str]:
    """The uploaded book's bytes and its file name (gradio keeps the name the user's file had)."""
    if not path:
        raise gr.Error("Upload a book first (.epub, .pdf, .md or .txt).")
    return Path(path).read_bytes(), Path(path).name


def quality_report(result: dict[str, Any]) -> str:
    """The quality gate's summary as Markdown: counts, then each sentence still failing with its time."""
    quality = result.get("quality")
    if not quality:
        return "Quality check was off."
    lines = [f"Checked {quality['checked']} sentences; {quality['retaken']} made again."]
    if not quality["failing"]:
        return lines[0] + " Every sentence passed."
    lines.append(f"{len(quality['failing'])} still differ from the text; listen at:")
    for item in quality["failing"]:
        start = item.get("start") or 0.0
        lines.append(
            f"- {int(start // 60)}:{start % 60:04.1f} — “{item['text']}” (heard “{item['heard']}”, "
            f"{item['error_rate']:.0%})"
        )
    return "\n".join(lines)


class AudiobookHandlers:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def read(self, path: str | None) -> tuple[str, pd.DataFrame]:
        """The book's title, author and chapter table (every chapter ticked)."""
        if not path:
            return "", chapter_frame([])
        with shown_errors():
            book = self.studio.audiobook.read(*book_upload(path))
        rows = [[True, n, c.title, len(c.text)] for n, c in enumerate(book.chapters, 1)]
        about = f"**{book.title}**" + (f" by {book.author}" if book.author else "")
        about += f" · {len(rows)} chapters, {book.characters:,} characters" + (
            " · cover" if book.cover else ""
        )
        return about, chapter_frame(rows)

    def generate(
        self,
        path: str | None,
        table: pd.DataFrame,
        voice: str,
        character_voice: str,
        speed: float,
        quality_check: bool,
        request: gr.Request,
    ) -> list[Any]:
        """Submit the "audiobook" task for the ticked chapters (what follows it is `follow`)."""
        data, name = book_upload(path)
        rows = [row for row in table.itertuples(index=False) if _ticked(row[0])]
        if not rows:
            raise gr.Error("Tick at least one chapter to make.")
        with shown_errors():
            config = AudiobookConfig.parse(
                {
                    "voice": voice,
                    "character_voice": character_voice or None,
                    "chapters": [int(row[1]) for row in rows],
                    "titles": {
                        str(int(row[1])): str(row[2]).strip()[:200] for row in rows if str(row[2]).strip()
                    },
                    "speed": float(speed),
                    "quality_check": bool(quality_check),
                }
            )
            task = self.studio.audiobook.submit(data, name, config, "audiobook (UI)", ui_owner(request))
        return [task.task_id, "Queued…", None, None, ""]

    def follow(self, task_id: str) -> Iterator[list[Any]]:
        """The task's progress until it ends, then the book, its files and the quality report."""
        for line, done in follow_task(self.studio, task_id):
            if done is None:
                yield [line, None, None, ""]
                continue
            result = done.result
            summary = (
                f"Done: **{result['title']}**, {result['chapters']} chapters, "
                f"{result['duration'] / 60:.1f} min (task `{task_id}`)"
            )
            files = task_files(self.studio, task_id, *RESULT_FILES)
            yield [summary, task_file(self.studio, task_id, "book.m4b"), files, quality_report(result)]

    def cancel(self, task_id: str) -> str:
        return cancel_task(self.studio, task_id)


def _ticked(value: Any) -> bool:
    """A table's checkbox cell: a bool, or its text after an edit ("true"/"false")."""
    return value is True or str(value).strip().lower() in ("true", "1", "yes")
