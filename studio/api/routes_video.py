"""Two-person video route: portraits + a script become a "video" task (files via the task routes)."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from studio.api.deps import get_studio, rate_limited_caller, read_upload
from studio.api.openapi import TASK_LINKS
from studio.api.routes_tasks import task_out
from studio.api.schemas import TaskOut, errors, text_to_speak
from studio.core import Studio
from studio.errors import BadInput
from studio.services.dialogue import DEFAULT_PAUSE_MS
from studio.services.video import VideoConfig, parse_bboxes

router = APIRouter(tags=["video"])


@router.post(
    "/api/v1/video",
    responses=TASK_LINKS
    | {202: {"model": TaskOut, "description": "waited max_wait_seconds: the task, still running"}}
    | errors(400, 401, 404, 413, 415, 422, 429, 503),
)
async def create_video(
    response: Response,
    script: str = Form(
        ...,
        description="a dialogue script; S1 is the left person, S2 the right one",
        json_schema_extra=text_to_speak("max_dialogue_chars"),
    ),
    voices: str = Form(
        "{}", description='JSON: {"S1": voice_id, "S2": voice_id} (missing: distinct defaults)'
    ),
    prompt: str = Form("", description="the scene, for MultiTalk (the embedded renderer does not use it)"),
    image_left: UploadFile | None = File(None, description="portrait of S1 (JPEG, PNG, WebP or BMP)"),
    image_right: UploadFile | None = File(None, description="portrait of S2"),
    image: UploadFile | None = File(None, description="instead of the two portraits: one image of both"),
    bboxes: str = Form(
        "",
        description='JSON {"S1": [x0, y0, x1, y1], "S2": [...]} in the image\'s pixels: where each face (or '
        "person) is, when detection misses it; either may be null",
    ),
    resolution: Literal["480p", "720p"] = Form("480p"),
    preset: Literal["fast", "quality", "low-vram"] = Form("fast"),
    steps: int | None = Form(
        None, ge=1, le=100, description="MultiTalk's sampling steps (default: the preset's)"
    ),
    text_guidance: float = Form(5.0, ge=0.0, le=20.0),
    audio_guidance: float = Form(4.0, ge=0.0, le=20.0),
    seed: int = Form(42, ge=0, le=2**31 - 1),
    engine: Literal["embedded", "multitalk"] = Form(
        "embedded",
        description="multitalk where it is set up (GPU + weights); else the embedded renderer, noted",
    ),
    gpus: Literal["auto", "1", "2", "4", "8"] = Form(
        "auto",
        description="GPUs for MultiTalk (one torchrun rank each, FSDP + Ulysses); auto: every free GPU the "
        "preset can use",
    ),
    pause_ms: int = Form(DEFAULT_PAUSE_MS, ge=0, le=10_000, description="silence between turns"),
    task_name: str = Form(""),
    wait: bool = Form(
        False, description="answer when the task has finished (202 with the task after max_wait_seconds)"
    ),
    studio: Studio = Depends(get_studio),
    owner: str = Depends(rate_limited_caller),
) -> TaskOut:
    """Make a talking video of two people speaking a dialogue: a "video" task whose files are
    `video.mp4` (H.264 + AAC), `dialogue.wav` and `dialogue.srt` (plus timing.json and per-person
    stems), downloaded through `/api/v1/task/{id}/files/download/{name}`."""
    try:
        chosen = json.loads(voices or "{}")
    except json.JSONDecodeError as error:
        raise BadInput(f"voices is not valid JSON ({error.msg})", "bad_voices") from None
    if not isinstance(chosen, dict) or not all(isinstance(v, str) for v in chosen.values()):
        raise BadInput('voices must be a JSON object like {"S1": "jm_kumo", "S2": "jf_alpha"}', "bad_voices")
    config = VideoConfig.parse(
        {
            "script": script,
            "voices": {str(k): v for k, v in chosen.items()},
            "prompt": prompt,
            "resolution": resolution,
            "steps": steps,
            "text_guidance": text_guidance,
            "audio_guidance": audio_guidance,
            "seed": seed,
            "engine": engine,
            "preset": preset,
            "gpus": gpus if gpus == "auto" else int(gpus),
            "pause_ms": pause_ms,
            "bboxes": parse_bboxes(bboxes),
        },
        where="form",
    )
    uploads = {
        name: await read_upload(upload, studio)
        for name, upload in (("image_left", image_left), ("image_right", image_right), ("image", image))
        if upload is not None
    }
    task = await run_in_threadpool(studio.video.submit, config, uploads, task_name or "video", owner)
    if wait:
        task = await run_in_threadpool(studio.runner.wait, task.task_id, studio.settings.max_wait_seconds)
        if not task.status.finished:  # bounded: the client polls the task from here
            response.status_code = 202
    return task_out(studio, task)
