"""Speech routes: the MegaTTS3-style `/api/v1/tts/synthesize`, and OpenAI's `/v1/audio/speech` with the
listings OpenAI-compatible clients read (`/v1/models`, `/v1/audio/models`, `/v1/audio/voices`)."""

from __future__ import annotations

import base64
from typing import get_args

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from studio import audio as audio_io
from studio.api.deps import caller, get_studio, rate_limited_caller
from studio.api.schemas import (
    AudioFormat,
    AudioModelList,
    CaptionedSpeech,
    CaptionedSpeechRequest,
    CaptionedWord,
    OpenAIFormat,
    OpenAIModel,
    OpenAIModelList,
    OpenAISpeechRequest,
    OpenAIVoice,
    OpenAIVoiceList,
    SynthesizeRequest,
    audio_response,
    errors,
)
from studio.core import Studio
from studio.errors import BadInput
from studio.services.speech import OPENAI_MODELS, SpeechRequest

router = APIRouter(responses=errors(400, 401, 422))
SPEAKING_ERRORS = errors(404, 413, 429, 503)


def speech_request(body: SynthesizeRequest, owner: str) -> SpeechRequest:
    """The studio's speech request for a synthesize (or captioned) body, asked by `owner`."""
    return SpeechRequest(
        text=body.text,
        voice=body.voice_id,
        engine=body.engine,
        speed=body.parameters.speed,
        pitch=body.parameters.pitch,
        language=body.language,
        requester=owner,
    )


@router.post(
    "/api/v1/tts/synthesize",
    tags=["speech"],
    response_class=Response,
    responses=audio_response(get_args(AudioFormat)) | SPEAKING_ERRORS,
)
def synthesize(
    body: SynthesizeRequest, owner: str = Depends(rate_limited_caller), studio: Studio = Depends(get_studio)
) -> Response:
    """Text -> one audio file in `format` (wav, mp3, flac, ogg). `X-Cache: hit` when it was made before."""
    request = speech_request(body, owner)
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


@router.post("/api/v1/tts/captioned", tags=["speech"], responses=SPEAKING_ERRORS)
def captioned(
    body: CaptionedSpeechRequest,
    response: Response,
    owner: str = Depends(rate_limited_caller),
    studio: Studio = Depends(get_studio),
) -> CaptionedSpeech:
    """Text -> JSON with the audio (base64, in `format`) and when each word is said: `words` (as
    written and as spoken, start and end in seconds) and `srt`, phrase-level subtitles. Words come
    from the engine's phoneme times (the embedded kokoro and piper); other engines answer with no
    words and one cue per sentence. `X-Cache: hit` when it was made before."""
    request = speech_request(body, owner)
    made, cache = studio.speech.captioned(request, body.format)
    response.headers["X-Cache"] = cache
    return CaptionedSpeech(
        audio=base64.b64encode(made.data).decode("ascii"),
        format=body.format,
        sample_rate=made.sample_rate,
        duration=round(made.duration, 3),
        words=[CaptionedWord(**word) for word in made.word_list()],
        srt=made.srt,
    )


@router.post(
    "/v1/audio/speech",
    tags=["openai"],
    response_class=StreamingResponse,
    responses=audio_response(get_args(OpenAIFormat), events=True) | SPEAKING_ERRORS,
)
def openai_speech(
    body: OpenAISpeechRequest, owner: str = Depends(rate_limited_caller), studio: Studio = Depends(get_studio)
) -> StreamingResponse:
    """OpenAI-compatible speech. wav, pcm and mp3 stream as they are made, a long first sentence in
    two pieces so the first audio leaves sooner. `X-Cache: hit` when it was made before.

    `stream_format: "sse"`: OpenAI's server-sent events (`speech.audio.delta` with base64 `audio`,
    one per sentence, then `speech.audio.done`). `instructions` (gpt-4o-mini-tts) are ignored: no
    engine here has style control; the answer says `X-Instructions: ignored`. A voice
    `narration_voice|quote_voice` speaks "quoted speech" in the second voice (SillyTavern's narrator
    and character)."""
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
    headers = {"X-Instructions": "ignored"} if body.instructions else {}
    if body.stream_format == "sse":
        events, cache = studio.speech.encoded_events(request, body.response_format)
        headers |= {"X-Cache": cache, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    parts, cache = studio.speech.encoded_stream(request, body.response_format)
    return StreamingResponse(
        parts, media_type=audio_io.media_type(body.response_format), headers=headers | {"X-Cache": cache}
    )


@router.get("/v1/models", tags=["openai"], dependencies=[Depends(caller)])
def openai_models(studio: Studio = Depends(get_studio)) -> OpenAIModelList:
    """OpenAI's model list: every `model` /v1/audio/speech takes (OpenAI's TTS names select the
    default engine; an engine's name selects it)."""
    return OpenAIModelList(data=[OpenAIModel(**model) for model in studio.speech.models()])


@router.get("/v1/audio/models", tags=["openai"], dependencies=[Depends(caller)])
def audio_models(studio: Studio = Depends(get_studio)) -> AudioModelList:
    """The same models as Open WebUI asks an OpenAI-compatible TTS server for them (`{"models": [{"id"}]}`)."""
    return AudioModelList(models=[{"id": model["id"]} for model in studio.speech.models()])


@router.get("/v1/audio/voices", tags=["openai"], dependencies=[Depends(caller)])
def audio_voices(studio: Studio = Depends(get_studio)) -> OpenAIVoiceList:
    """Every voice /v1/audio/speech takes by name, as Open WebUI reads them (`{"voices": [{"id",
    "name"}]}`): built-in voices, fitted library voices and OpenAI's names."""
    return OpenAIVoiceList(voices=[OpenAIVoice(**voice) for voice in studio.speech.voice_list()])
