"""Speech routes: the MegaTTS3-style `/api/v1/tts/synthesize` and OpenAI's `/v1/audio/speech`."""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from studio import audio as audio_io
from studio.api.deps import get_studio, rate_limited_caller
from studio.api.schemas import (
    AudioFormat,
    OpenAIFormat,
    OpenAISpeechRequest,
    SynthesizeRequest,
    audio_response,
    errors,
)
from studio.core import Studio
from studio.errors import BadInput
from studio.services.speech import OPENAI_MODELS, SpeechRequest

router = APIRouter(
    dependencies=[Depends(rate_limited_caller)], responses=errors(400, 401, 404, 413, 422, 429, 503)
)


@router.post(
    "/api/v1/tts/synthesize",
    tags=["speech"],
    response_class=Response,
    responses=audio_response(get_args(AudioFormat)),
)
def synthesize(
    body: SynthesizeRequest, owner: str = Depends(rate_limited_caller), studio: Studio = Depends(get_studio)
) -> Response:
    """Text -> one audio file in `format` (wav, mp3, flac, ogg). `X-Cache: hit` when it was made before."""
    request = SpeechRequest(
        text=body.text,
        voice=body.voice_id,
        engine=body.engine,
        speed=body.parameters.speed,
        pitch=body.parameters.pitch,
        language=body.language,
        requester=owner,
    )
    speech, cache = studio.speech.encoded(request, body.format)
    return Response(
        speech.data,
        media_type=audio_io.media_type(body.format),
        headers={
            "X-Audio-Duration": f"{speech.duration:.3f}",
            "X-Sample-Rate": str(speech.sample_rate),
            "X-Cache": cache,
        },
    )


@router.post(
    "/v1/audio/speech",
    tags=["openai"],
    response_class=StreamingResponse,
    responses=audio_response(get_args(OpenAIFormat)),
)
def openai_speech(
    body: OpenAISpeechRequest, owner: str = Depends(rate_limited_caller), studio: Studio = Depends(get_studio)
) -> StreamingResponse:
    """OpenAI-compatible speech. wav, pcm and mp3 stream as they are made, a long first sentence in
    two pieces so the first audio leaves sooner. `X-Cache: hit` when it was made before."""
    if body.model not in OPENAI_MODELS and body.model not in studio.registry.names():
        raise BadInput(
            f"model '{body.model}' is unknown; use {', '.join(OPENAI_MODELS)} (the default engine) "
            f"or an engine name: {', '.join(studio.registry.names())}",
            "unknown_model",
        )
    request = SpeechRequest(
        text=body.input,
        voice=body.voice,
        engine=body.model,
        speed=body.speed,
        language=body.language,
        requester=owner,
        quick_start=True,
    )
    parts, cache = studio.speech.encoded_stream(request, body.response_format)
    return StreamingResponse(
        parts, media_type=audio_io.media_type(body.response_format), headers={"X-Cache": cache}
    )
