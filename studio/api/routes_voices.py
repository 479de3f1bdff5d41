"""Voice library routes (MegaTTS3-style service) and zero-shot synthesis from a clip."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from studio import audio as audio_io
from studio.api.deps import caller, get_studio, rate_limited_caller
from studio.api.routes_tasks import task_out
from studio.api.schemas import TaskOut
from studio.core import Studio
from studio.errors import BadInput, NotFound, TooLarge
from studio.services.cloning import THOROUGH_OFF

router = APIRouter(tags=["voices"])

FitMode = Literal["quick", "thorough", "none"]


class VoicePatch(BaseModel):
    name: str | None = Field(None, max_length=80)
    description: str | None = Field(None, max_length=500)
    tags: list[str] | None = None
    transcript: str | None = Field(None, max_length=2000)


class FitBody(BaseModel):
    mode: Literal["quick", "thorough"] = "thorough"


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"'{upload.filename}' is larger than the {limit // 2**20} MB limit")
    return data


@router.get("/api/v1/voices", dependencies=[Depends(caller)])
def list_voices(studio: Studio = Depends(get_studio)) -> dict[str, list[dict[str, Any]]]:
    builtin = [dataclasses.asdict(v) | {"type": "builtin", "usable": True} for v in studio.registry.voices()]
    return {"voices": builtin + [record.to_dict() for record in studio.library.list()]}


@router.post("/api/v1/voices/upload", dependencies=[Depends(rate_limited_caller)])
async def upload_voice(
    voice_file: UploadFile = File(
        ..., description="reference clip: wav, mp3, flac, m4a or ogg, at most 50 MB"
    ),
    voice_id: str = Form(..., description="a-z, 0-9, '_' and '-'"),
    description: str = Form(""),
    name: str = Form(""),
    tags: str = Form("", description="comma-separated"),
    fit: FitMode = Form("quick", description="quick: fitted now (~30 s); thorough: a task; none: later"),
    voice_latent: UploadFile | None = File(None, description="optional MegaTTS3 latent (.npy)"),
    language: str = Form("auto", description="the clip's language: auto (heard by the ASR), zh, ja, en"),
    studio: Studio = Depends(get_studio),
    owner: str = Depends(caller),
) -> dict[str, Any]:
    _check_fit_mode(studio, fit)
    limit = studio.settings.max_upload_mb * 2**20
    data = await read_limited(voice_file, limit)
    latent = await read_limited(voice_latent, limit) if voice_latent else None
    record = await run_in_threadpool(
        studio.library.add,
        voice_id,
        data,
        voice_file.filename or "",
        limit,
        name,
        description,
        tags.split(","),
        latent,
        studio.speech.language(language),
    )
    answer: dict[str, Any] = {}
    if fit == "quick":
        record = await run_in_threadpool(studio.cloning.fit_voice, record.id, "quick")
    elif fit == "thorough":
        task = studio.runner.submit(
            "voice_fit", f"fit {record.id}", {"voice_id": record.id, "mode": "thorough"}, owner
        )
        answer["task"] = task_out(studio, task).model_dump()
    return record.to_dict() | answer


@router.get("/api/v1/voices/{voice_id}", dependencies=[Depends(caller)])
def get_voice(voice_id: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return studio.library.require(voice_id).to_dict()


@router.get(
    "/api/v1/voices/{voice_id}/reference", dependencies=[Depends(caller)], response_class=FileResponse
)
def voice_reference(voice_id: str, studio: Studio = Depends(get_studio)) -> FileResponse:
    """The cleaned reference clip (mono 24 kHz wav)."""
    return _voice_file(studio, voice_id, "reference.wav")


@router.get("/api/v1/voices/{voice_id}/preview", dependencies=[Depends(caller)], response_class=FileResponse)
def voice_preview(voice_id: str, studio: Studio = Depends(get_studio)) -> FileResponse:
    """A sentence spoken with the fitted voice (made when the voice is fitted)."""
    return _voice_file(studio, voice_id, "preview.wav")


def _check_fit_mode(studio: Studio, mode: str) -> None:
    if mode == "thorough" and not studio.settings.allow_thorough_fit:
        raise BadInput(THOROUGH_OFF, "thorough_fit_disabled")


def _voice_file(studio: Studio, voice_id: str, name: str) -> FileResponse:
    studio.library.require(voice_id)
    path = studio.library.root / voice_id / name
    if not path.exists():
        raise NotFound(f"voice '{voice_id}' has no {name.split('.')[0]} yet (fit it first)", "not_fitted")
    return FileResponse(path, media_type="audio/wav")


@router.patch("/api/v1/voices/{voice_id}", dependencies=[Depends(caller)])
def update_voice(voice_id: str, body: VoicePatch, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return studio.library.update(voice_id, **body.model_dump()).to_dict()


@router.delete("/api/v1/voices/{voice_id}", dependencies=[Depends(caller)])
def delete_voice(voice_id: str, studio: Studio = Depends(get_studio)) -> dict[str, str]:
    studio.library.delete(voice_id)
    return {"id": voice_id, "status": "deleted"}


@router.post("/api/v1/voices/{voice_id}/fit")
def fit_voice(
    voice_id: str, body: FitBody, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> TaskOut:
    """Fit (again) as a task: progress, and a live similarity curve in the task's curve.json."""
    _check_fit_mode(studio, body.mode)
    studio.library.require(voice_id)
    task = studio.runner.submit(
        "voice_fit", f"fit {voice_id}", {"voice_id": voice_id, "mode": body.mode}, owner
    )
    return task_out(studio, task)


@router.post(
    "/api/v1/tts/synthesize_file",
    tags=["speech"],
    dependencies=[Depends(rate_limited_caller)],
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}, "description": "speech in the voice of the clip"}},
)
async def synthesize_file(
    text: str = Form(...),
    voice_file: UploadFile = File(..., description="reference clip (wav, mp3, flac, m4a, ogg)"),
    voice_latent: UploadFile | None = File(
        None, description="MegaTTS3 latent (.npy), used when MegaTTS3 runs"
    ),
    speed: float = Form(1.0),
    format: Literal["wav", "mp3", "flac", "ogg"] = Form("wav"),
    language: str = Form("auto", description="auto (each sentence's own, by its script), zh, ja, en"),
    studio: Studio = Depends(get_studio),
) -> Response:
    """Zero-shot: speech in the voice of `voice_file`. On CPU the clip's voice is fitted first (~30 s,
    cached by the clip's content, so the next request with the same clip is fast)."""
    limit = studio.settings.max_upload_mb * 2**20
    clip = await read_limited(voice_file, limit)
    latent = await read_limited(voice_latent, limit) if voice_latent else None
    speech, info = await run_in_threadpool(
        studio.cloning.synthesize_from_clip, text, clip, voice_file.filename or "", speed, latent, language
    )
    headers = {
        "X-Engine": info["engine"],
        "X-Clone-Method": info["method"],
        "X-Clone-Cached": str(info.get("cached", False)).lower(),
    }
    if "similarity" in info:
        headers |= {
            "X-Voice-Similarity": str(info["similarity"]),
            "X-Baseline-Voice": info["baseline_voice"],
            "X-Baseline-Similarity": str(info["baseline_similarity"]),
        }
    return Response(
        audio_io.encode(speech.audio, speech.sample_rate, format),
        media_type=audio_io.media_type(format),
        headers=headers,
    )
