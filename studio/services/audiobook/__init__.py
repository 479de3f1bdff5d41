"""Audiobooks: books read into chapters (`books`), and the "audiobook" task that speaks them into an
M4B with chapters, per-chapter MP3s, subtitles and a quality report (`service`)."""

from studio.services.audiobook.books import Book, Chapter, read_book
from studio.services.audiobook.service import (
    AudiobookConfig,
    AudiobookService,
    chapter_numbers,
    chapter_units,
)

__all__ = [
    "AudiobookConfig",
    "AudiobookService",
    "Book",
    "Chapter",
    "chapter_numbers",
    "chapter_units",
    "read_book",
]
