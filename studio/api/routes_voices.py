"""Voice library routes (MegaTTS3-style service) and zero-shot synthesis from a clip."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from studio import audio as audio_io
from studio.api.deps import caller, get_studio, rate_limited_caller, read_upload
from studio.api.openapi import TASK_LINKS, VOICE_LINKS
from studio.api.routes_tasks import task_out
from studio.api.schemas import (
    LANGUAGE_HELP,
    AudioFormat,
    FitBody,
    LanguageName,
    TaskOut,
    VoicePatch,
    audio_response,
    errors,
    text_to_speak,
)
from studio.core import Studio
from studio.errors import BadInput, NotFound
from studio.services.cloning import THOROUGH_OFF, VoiceFitConfig
from studio.services.voices import VOICE_ID

router = APIRouter(tags=["voices"], responses=errors(400, 401, 422))

FitMode = Literal["quick", "thorough", "none"]
# The path convertor `voice_id` checks the id (Python's re: pydantic's regex engine has no look-ahead).
VoiceId = Path(description="a library voice's id", json_schema_extra={"pattern": VOICE_ID.pattern})


def _new_voice_id(value: str) -> str:
    if not VOICE_ID.match(value):
        raise ValueError(
            "1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit, not 'upload'"
        )
    return value


@router.get("/api/v1/voices", dependencies=[Depends(caller)])
def list_voices(studio: Studio = Depends(get_studio)) -> dict[str, list[dict[str, Any]]]:
    builtin = [dataclasses.asdict(v) | {"type": "builtin", "usable": True} for v in studio.registry.voices()]
    return {"voices": builtin + [record.to_dict() for record in studio.library.list()]}


@router.post(
    "/api/v1/voices/upload",
    dependencies=[Depends(rate_limited_caller)],
    responses=errors(409, 413, 415, 429) | VOICE_LINKS,
)
async def upload_voice(
    voice_file: UploadFile = File(
        ...,
        description="reference clip: wav, mp3, flac, m4a or ogg, within the upload limit (50 MB by default)",
    ),
    voice_id: Annotated[str, AfterValidator(_new_voice_id)] = Form(
        ..., description="the new voice's id", json_schema_extra={"pattern": VOICE_ID.pattern}
    ),
    description: str = Form("", max_length=500),
    name: str = Form("", max_length=80),
    tags: str = Form("", max_length=400, description="comma-separated, at most 10 of 32 characters"),
    fit: FitMode = Form("quick", description="quick: fitted now (~30 s); thorough: a task; none: later"),
    voice_latent: UploadFile | None = File(None, description="optional MegaTTS3 latent (.npy)"),
    language: LanguageName = Form("auto", description="the clip's language: " + LANGUAGE_HELP),
    studio: Studio = Depends(get_studio),
    owner: str = Depends(caller),
) -> dict[str, Any]:
    _check_fit_mode(studio, fit)
    data = await read_upload(voice_file, studio)
    latent = await read_upload(voice_latent, studio) if voice_latent else None
    record = await run_in_threadpool(
        studio.library.add,
        voice_id,
        data,
        voice_file.filename or "",
        studio.settings.max_upload_bytes,
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
        config = VoiceFitConfig(voice_id=record.id, mode="thorough")
        task = studio.runner.submit("voice_fit", f"fit {record.id}", config, owner)
        answer["task"] = task_out(studio, task).model_dump()
    return record.to_dict() | answer


@router.get("/api/v1/voices/{voice_id:voice_id}", dependencies=[Depends(caller)], responses=errors(404))
def get_voice(voice_id: str = VoiceId, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return studio.library.require(voice_id).to_dict()


@router.get(
    "/api/v1/voices/{voice_id:voice_id}/reference",
    dependencies=[Depends(caller)],
    response_class=FileResponse,
    responses=audio_response(("wav",)) | errors(404),
)
def voice_reference(voice_id: str = VoiceId, studio: Studio = Depends(get_studio)) -> FileResponse:
    """The cleaned reference clip (mono 24 kHz wav)."""
    return _voice_file(studio, voice_id, "reference.wav")


@router.get(
    "/api/v1/voices/{voice_id:voice_id}/preview",
    dependencies=[Depends(caller)],
    response_class=FileResponse,
    responses=audio_response(("wav",)) | errors(404),
)
def voice_preview(voice_id: str = VoiceId, studio: Studio = Depends(get_studio)) -> FileResponse:
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


@router.patch("/api/v1/voices/{voice_id:voice_id}", dependencies=[Depends(caller)], responses=errors(404))
def update_voice(
    body: VoicePatch, voice_id: str = VoiceId, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    return studio.library.update(voice_id, **body.model_dump()).to_dict()


@router.delete("/api/v1/voices/{voice_id:voice_id}", dependencies=[Depends(caller)], responses=errors(404))
def delete_voice(voice_id: str = VoiceId, studio: Studio = Depends(get_studio)) -> dict[str, str]:
    studio.library.delete(voice_id)
    return {"id": voice_id, "status": "deleted"}


@router.post("/api/v1/voices/{voice_id:voice_id}/fit", responses=errors(404) | TASK_LINKS)
def fit_voice(
    body: FitBody, voice_id: str = VoiceId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> TaskOut:
    """Fit (again) as a task: progress, and a live similarity curve in the task's curve.json."""
    config = VoiceFitConfig(voice_id=voice_id, mode=body.mode)
    task = studio.runner.submit("voice_fit", f"fit {voice_id}", config, owner)
    return task_out(studio, task)


@router.post(
    "/api/v1/tts/synthesize_file",
    tags=["speech"],
    dependencies=[Depends(rate_limited_caller)],
    response_class=Response,
    responses=audio_response(get_args(AudioFormat)) | errors(413, 415, 429, 503),
)
async def synthesize_file(
    text: str = Form(..., json_schema_extra=text_to_speak("max_text_chars")),
    voice_file: UploadFile = File(..., description="reference clip (wav, mp3, flac, m4a, ogg)"),
    voice_latent: UploadFile | None = File(
        None, description="MegaTTS3 latent (.npy), used when MegaTTS3 runs"
    ),
    speed: float = Form(1.0, ge=0.25, le=4.0),
    format: AudioFormat = Form("wav"),
    language: LanguageName = Form("auto", description=LANGUAGE_HELP),
    studio: Studio = Depends(get_studio),
) -> Response:
    """Zero-shot: speech in the voice of `voice_file`. On CPU the clip's voice is fitted first (~30 s,
    cached by the clip's content, so the next request with the same clip is fast)."""
    clip = await read_upload(voice_file, studio)
    latent = await read_upload(voice_latent, studio) if voice_latent else None
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
