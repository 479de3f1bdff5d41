"""Audiobooks: books read from real EPUB/PDF/Markdown/text files, the "audiobook" task in a real
server (SIGKILLed after its first chapter and restarted), its M4B (chapters, title, author, cover),
the character voice on quoted speech, what the bundled ASR hears, bad uploads and the CLI."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from studio import audio as audio_io
from studio.errors import BadInput, UnsupportedMedia
from studio.services.asr import normalize_words
from studio.services.audiobook import chapter_units, read_book
from studio.services.speaker import SpeakerEncoder, similarity
from tests.conftest import ROOT, LiveServer

CHAPTERS = [
    ("The Harbour", "The boat left the harbour at dawn."),
    ("The Storm", 'Clouds gathered. "We should turn back now, before the rain begins," said the captain.'),
    ("Home Again", "By evening they were safe at home."),
]
LIMIT = 50 * 2**20


def epub_bytes(chapters: list[tuple[str, str]] = CHAPTERS) -> bytes:
    """A real EPUB 3 made with ebooklib: a chapter per (title, text), a table of contents, a PNG cover."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("studio-test-book")
    book.set_title("The Small Voyage")
    book.set_language("en")
    book.add_author("Ada Writer")
    cover = Image.fromarray((np.indices((64, 48)).sum(0) * 3 % 256).astype(np.uint8)).convert("RGB")
    png = io.BytesIO()
    cover.save(png, "PNG")
    book.set_cover("cover.png", png.getvalue())
    items = []
    for n, (title, text) in enumerate(chapters, 1):
        item = epub.EpubHtml(title=title, file_name=f"chap_{n}.xhtml", lang="en")
        item.content = f"<h1>{title}</h1><p>{text}</p>"
        book.add_item(item)
        items.append(item)
    book.toc = [epub.Link(item.file_name, item.title, f"c{i}") for i, item in enumerate(items)]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def pdf_bytes(pages: list[str], outline: list[tuple[str, int]] | None = None) -> bytes:
    """A minimal valid PDF written by hand (no PDF writer is installed): one line of Helvetica text
    per page, and optional top-level bookmarks (title, page index)."""
    outline = outline or []
    page_ids = [5 + 2 * i for i in range(len(pages))]
    item_ids = [5 + 2 * len(pages) + i for i in range(len(outline))]
    objects = {
        1: "<< /Type /Catalog /Pages 2 0 R" + (" /Outlines 4 0 R" if outline else "") + " >>",
        2: f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {len(pages)} >>",
        3: "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        4: f"<< /Type /Outlines /First {item_ids[0]} 0 R /Last {item_ids[-1]} 0 R /Count {len(outline)} >>"
        if outline
        else "<< /Type /Outlines /Count 0 >>",
    }
    for page_id, text in zip(page_ids, pages, strict=True):
        stream = f"BT /F1 12 Tf 50 750 Td ({text}) Tj ET"
        objects[page_id] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {page_id + 1} 0 R >>"
        )
        objects[page_id + 1] = f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream"
    for j, (title, page) in enumerate(outline):
        links = (f" /Prev {item_ids[j - 1]} 0 R" if j > 0 else "") + (
            f" /Next {item_ids[j + 1]} 0 R" if j < len(outline) - 1 else ""
        )
        objects[item_ids[j]] = (
            f"<< /Parent 4 0 R /Title ({title}) /Dest [{page_ids[page]} 0 R /Fit]{links} >>"
        )
    out, offsets = b"%PDF-1.4\n", {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n{objects[number]}\nendobj\n".encode("latin-1")
    xref, count = len(out), max(objects) + 1
    out += f"xref\n0 {count}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offsets[n]:010d} 00000 n \n".encode() for n in range(1, count))
    trailer = f"<< /Size {count} /Root 1 0 R /Info << /Title (Sea Notes) /Author (Bo Pilot) >> >>"
    return out + f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()


# ---- reading books ---------------------------------------------------------------------------------
def test_an_epub_reads_as_its_table_of_contents_with_cover_title_and_author() -> None:
    book = read_book(epub_bytes(), "voyage.epub", LIMIT)
    assert (book.title, book.author) == ("The Small Voyage", "Ada Writer")
    assert [c.title for c in book.chapters] == [title for title, _ in CHAPTERS]  # the nav page is no chapter
    assert book.chapters[1].text == f"The Storm\n\n{CHAPTERS[1][1]}"
    assert book.cover is not None and Image.open(io.BytesIO(book.cover)).size == (48, 64)
    units = chapter_units(book.chapters[1].text)
    assert [u.text for u in units if u.quoted] == ["We should turn back now, before the rain begins,"]


def test_a_pdf_reads_by_its_bookmarks_or_else_by_pages() -> None:
    pages = ["The first chapter starts.", "It goes on here.", "The second chapter ends it."]
    book = read_book(pdf_bytes(pages, [("Beginning", 0), ("Ending", 2)]), "notes.pdf", LIMIT)
    assert (book.title, book.author) == ("Sea Notes", "Bo Pilot")
    assert [(c.title, c.text) for c in book.chapters] == [
        ("Beginning", f"{pages[0]}\n\n{pages[1]}"),
        ("Ending", pages[2]),
    ]
    unmarked = read_book(pdf_bytes(pages), "notes.pdf", LIMIT)
    assert [c.title for c in unmarked.chapters] == ["Pages 1-3"]


def test_markdown_and_text_read_by_headings_and_chapter_lines() -> None:
    markdown = (
        b"# A Book\n\n## First\n\nSome *bold* [linked](http://x.org) words.\n\n## Second\n\nMore words.\n"
    )
    book = read_book(markdown, "a.md", LIMIT)
    assert book.title == "A Book"
    assert [(c.title, c.text) for c in book.chapters] == [
        ("First", "First.\n\nSome bold linked words."),
        ("Second", "Second.\n\nMore words."),
    ]
    text = read_book(b"Chapter 1\n\nIt began.\n\nCHAPTER II\n\nIt ended.\n", "story.txt", LIMIT)
    assert [c.title for c in text.chapters] == ["Chapter 1", "CHAPTER II"]
    long = read_book(("A sentence of some length here. " * 40 + "\n\n").encode() * 10, "long.txt", LIMIT)
    assert len(long.chapters) == 4 and all(len(c.text) <= 5_000 for c in long.chapters)


@pytest.mark.parametrize(
    ("data", "name", "says"),
    [
        (bytes(range(256)) * 20, "book.epub", "not an EPUB"),
        (b"PK\x03\x04" + b"\x00" * 200, "book.epub", "zip archive is damaged"),
        (b"%PDF-1.4\n1 0 obj <<", "book.pdf", "PDF cannot be read"),
        (b"\xff\xfe\x00bin", "book.txt", "not text"),
        (b"  \n\n ", "book.md", "no words to read"),
    ],
)
def test_hostile_books_are_refused_saying_why(data: bytes, name: str, says: str) -> None:
    with pytest.raises(BadInput, match=says):
        read_book(data, name, LIMIT)


def test_a_password_pdf_is_refused() -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["Secret words."]))))
    writer.encrypt("open sesame")
    locked = io.BytesIO()
    writer.write(locked)
    with pytest.raises(BadInput, match="password"):
        read_book(locked.getvalue(), "locked.pdf", LIMIT)
    with pytest.raises(UnsupportedMedia, match=r"\.epub, \.pdf, \.md or \.txt"):
        read_book(b"words", "book.docx", LIMIT)


@pytest.mark.slow
def test_bad_uploads_answer_422_with_the_reason(made_book: MadeBook) -> None:
    for name, data, says in (
        ("book.epub", b"\x00\x13random bytes" * 50, "not an EPUB"),
        ("empty.txt", b"", "no words to read"),
    ):
        response = made_book.client.post(
            "/api/v1/audiobook", files={"book": (name, data)}, data={"voice": "joe"}
        )
        assert response.status_code == 422, response.text
        assert says in response.json()["error"]["message"]
    response = made_book.client.post(
        "/api/v1/audiobook", files={"book": ("b.epub", epub_bytes())}, data={"chapters": "2,9"}
    )
    assert response.status_code == 422 and "no chapter 9" in response.json()["error"]["message"]


# ---- the task, in a real server killed after its first chapter -------------------------------------
@dataclass
class MadeBook:
    folder: Path  # the task's folder
    task: dict[str, Any]  # as GET /api/v1/task/{id} answers, completed
    log: str
    client: httpx.Client  # to the live server that made it


@pytest.fixture(scope="module")
def made_book(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[MadeBook]:
    """The EPUB as an audiobook task (narrator jm_kumo, quotes in jf_alpha, quality gate on) in a live
    server SIGKILLed once chapter 1 is done and started again; the server stays up for the tests."""
    data_dir = tmp_path_factory.mktemp("audiobook")
    (data_dir / "cache").symlink_to(shared_cache, target_is_directory=True)  # models assembled once a run
    server = LiveServer(data_dir).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
            response = client.post(
                "/api/v1/audiobook",
                files={"book": ("voyage.epub", epub_bytes(), "application/epub+zip")},
                data={"voice": "jm_kumo", "character_voice": "jf_alpha"},
            )
            assert response.status_code == 200, response.text
            task_id = response.json()["task_id"]
            folder = data_dir / "tasks" / task_id
            first = folder / "_chapters" / "00001.json"
            deadline = time.monotonic() + 120
            while not first.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.exists(), server.log_tail()
            server.crash()
        # A finished chapter's WAV, and the sentences of chapter 2 finished before the kill (a
        # sentence's .json is written last; a .wav alone was cut short).
        chapter_wav = folder / "_chapters" / "00001.wav"
        made_before = chapter_wav.stat().st_mtime_ns
        second = sorted((folder / "_chapters" / "00002").glob("*.json"))
        kept = {p: p.stat().st_mtime_ns for p in second}
        server.launch()
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
            deadline = time.monotonic() + 180
            while (task := client.get(f"/api/v1/task/{task_id}").json())["status"] not in (
                "completed",
                "failed",
                "cancelled",
            ):
                assert time.monotonic() < deadline, task
                time.sleep(0.2)
            assert task["status"] == "completed", task
            assert chapter_wav.stat().st_mtime_ns == made_before  # the finished chapter was not made again
            assert all(p.stat().st_mtime_ns == mtime for p, mtime in kept.items())
            log = client.get(f"/api/v1/task/{task_id}/logs").text
            if kept:
                assert f"chapter 2: kept {len(kept)} sentence(s) made before" in log
            yield MadeBook(folder, task, log, client)
    finally:
        server.stop()


def test_a_killed_book_resumes_without_making_finished_chapters_again(
    made_book: MadeBook,
) -> None:
    task, log = made_book.task, made_book.log
    assert "resuming: 1 of 3 chapter(s) already made" in log
    assert task["result"]["chapters"] == 3
    assert {"book.m4b", "book.srt", "book.vtt", "chapters.json", "timing.json"} <= set(task["files"])
    assert [f for f in task["files"] if f.startswith("chapters/")] == [
        f"chapters/00{n}.mp3" for n in (1, 2, 3)
    ]
    quality = task["result"]["quality"]
    assert quality["checked"] == task["result"]["sentences"] and quality["failing"] == []


def test_the_m4b_has_chapters_title_author_and_cover(made_book: MadeBook) -> None:
    folder = made_book.folder
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    meta = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(folder / "book.m4b"), "-f", "ffmetadata", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "title=The Small Voyage" in meta and "artist=Ada Writer" in meta
    sections = meta.split("[CHAPTER]")[1:]
    titles = [re.search(r"^title=(.*)$", s, re.MULTILINE).group(1) for s in sections]  # type: ignore[union-attr]
    assert titles == [title for title, _ in CHAPTERS]
    position = 0.0
    for section, number in zip(sections, (1, 2, 3), strict=True):
        base = int(re.search(r"TIMEBASE=1/(\d+)", section).group(1))  # type: ignore[union-attr]
        start, end = (int(re.search(rf"{key}=(\d+)", section).group(1)) / base for key in ("START", "END"))  # type: ignore[union-attr]
        audio, rate = audio_io.decode(folder / f"chapters/{number:03d}.mp3")
        assert abs(start - position) < 0.05 and abs(end - start - len(audio) / rate) < 0.05
        position = end
    probe = subprocess.run([ffmpeg, "-i", str(folder / "book.m4b")], capture_output=True, text=True).stderr
    assert "(attached pic)" in probe and "aac" in probe


def test_quoted_speech_is_in_the_character_voice(
    made_book: MadeBook,
) -> None:
    folder = made_book.folder
    book, rate = audio_io.decode(folder / "book.m4b", 16000)
    timing = json.loads((folder / "timing.json").read_text())
    encoder = SpeakerEncoder()

    def part(item: dict) -> np.ndarray:
        return encoder.embed(book[int(item["start"] * rate) : int(item["end"] * rate)], rate)

    quote = next(t for t in timing if t["quoted"])
    assert quote["voice"] == "jf_alpha"
    narration = [part(t) for t in timing if not t["quoted"] and len(t["text"]) > 20][:3]
    sample = "The weather was lovely, and we walked along the river for an hour."
    references = {}
    for voice in ("jf_alpha", "jm_kumo"):
        spoken = made_book.client.post(
            "/v1/audio/speech", json={"input": sample, "voice": voice, "response_format": "wav"}
        )
        references[voice] = encoder.embed(*audio_io.decode(spoken.content))
    quoted = part(quote)
    assert similarity(quoted, references["jf_alpha"]) > similarity(quoted, references["jm_kumo"]) + 0.05
    for embedding in narration:
        assert similarity(embedding, references["jm_kumo"]) > similarity(embedding, references["jf_alpha"])


def test_the_bundled_asr_hears_the_book(made_book: MadeBook, transcriber) -> None:  # type: ignore[no-untyped-def]
    folder = made_book.folder
    audio, rate = audio_io.decode(folder / "book.m4b", 16000)
    heard = Counter(normalize_words(transcriber.transcribe(audio, rate, "en").text))
    words = [w for _, text in CHAPTERS for w in normalize_words(text)]
    found = sum(min(count, heard[word]) for word, count in Counter(words).items())
    assert found / len(words) >= 0.95, (found, len(words), heard)


def test_the_cli_makes_the_chosen_chapters(tmp_path: Path) -> None:
    book = tmp_path / "tale.md"
    book.write_text(
        "# A Tale\n\n## Morning\n\nThe sun rose.\n\n## Night\n\nThe moon came out.\n", encoding="utf-8"
    )
    output = tmp_path / "out" / "tale.m4b"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "studio.audiobook",
            str(book),
            "--voice",
            "joe",
            "--chapters",
            "2",
            "--no-quality-check",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        env={**os.environ, "STUDIO_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 chapters" in done.stdout and "chapter 1/1" in done.stderr
    chapters = json.loads((tmp_path / "out" / "tale_files" / "chapters.json").read_text())
    assert [c["title"] for c in chapters] == ["Night"]
    assert audio_io.decode(output)[0].size > 0
