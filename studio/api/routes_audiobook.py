"""Audiobook route: an uploaded book (EPUB, PDF, Markdown, text) becomes an "audiobook" task whose
files (book.m4b, chapters/NNN.mp3, book.srt, chapters.json) come from the task routes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from studio.api.deps import get_studio, rate_limited_caller, read_upload
from studio.api.openapi import TASK_LINKS
from studio.api.routes_tasks import task_out
from studio.api.schemas import TaskOut, errors
from studio.core import Studio
from studio.services.audiobook import AudiobookConfig, chapter_numbers

router = APIRouter(tags=["audiobook"])


@router.post(
    "/api/v1/audiobook",
    responses=TASK_LINKS
    | {202: {"model": TaskOut, "description": "waited max_wait_seconds: the task, still running"}}
    | errors(400, 401, 404, 413, 415, 422, 429, 503),
)
async def create_audiobook(
    response: Response,
    book: UploadFile = File(..., description="the book: .epub, .pdf, .md or .txt (UTF-8)"),
    voice: str = Form("jm_kumo", description="the narrator's voice id"),
    character_voice: str = Form("", description="voice for quoted speech; empty: the narrator's"),
    chapters: str = Form(
        "", description="chapter numbers to make, e.g. 1,3,5-7 (1 = the first); empty: every chapter"
    ),
    title: str = Form("", max_length=300, description="the book's title (default: the book's own)"),
    author: str = Form("", max_length=300, description="the author (default: the book's own)"),
    speed: float = Form(1.0, ge=0.25, le=4.0),
    language: str = Form("auto", description="auto (each sentence's own), zh, ja, en, en-gb, ..."),
    quality_check: bool = Form(
        True, description="hear every sentence back with the bundled ASR and make a misspoken one again"
    ),
    task_name: str = Form(""),
    wait: bool = Form(
        False, description="answer when the task has finished (202 with the task after max_wait_seconds)"
    ),
    studio: Studio = Depends(get_studio),
    owner: str = Depends(rate_limited_caller),
) -> TaskOut:
    """Read a book aloud: an "audiobook" task, chapter by chapter (resumable), whose files are
    `book.m4b` (AAC with chapters, title, author and cover), `chapters/NNN.mp3`, `book.srt`,
    `book.vtt`, `chapters.json` and `timing.json`, downloaded through
    `/api/v1/task/{id}/files/download/{name}`; its result has the quality gate's report."""
    config = AudiobookConfig.parse(
        {
            "voice": voice,
            "character_voice": character_voice or None,
            "chapters": chapter_numbers(chapters),
            "title": title or None,
            "author": author or None,
            "speed": speed,
            "language": None if language == "auto" else language,
            "quality_check": quality_check,
        },
        where="form",
    )
    data = await read_upload(book, studio)
    task = await run_in_threadpool(
        studio.audiobook.submit, data, book.filename or "", config, task_name or "audiobook", owner
    )
    if wait:
        task = await run_in_threadpool(studio.runner.wait, task.task_id, studio.settings.max_wait_seconds)
        if not task.status.finished:  # bounded: the client polls the task from here
            response.status_code = 202
    return task_out(studio, task)
