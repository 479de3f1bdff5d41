"""Speech routes: the MegaTTS3-style `/api/v1/tts/synthesize` and OpenAI's `/v1/audio/speech`."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from typing import get_args

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from engines.base import AudioChunk
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
def synthesize(body: SynthesizeRequest, studio: Studio = Depends(get_studio)) -> Response:
    """Text -> one audio file in `format` (wav, mp3, flac, ogg)."""
    request = SpeechRequest(
        text=body.text,
        voice=body.voice_id,
        engine=body.engine,
        speed=body.parameters.speed,
        pitch=body.parameters.pitch,
        language=body.language,
    )
    speech = studio.speech.synthesize(request)
    return Response(
        audio_io.encode(speech.audio, speech.sample_rate, body.format),
        media_type=audio_io.media_type(body.format),
        headers={
            "X-Audio-Duration": f"{len(speech.audio) / speech.sample_rate:.3f}",
            "X-Sample-Rate": str(speech.sample_rate),
        },
    )


@router.post(
    "/v1/audio/speech",
    tags=["openai"],
    response_class=StreamingResponse,
    responses=audio_response(get_args(OpenAIFormat)),
)
def openai_speech(body: OpenAISpeechRequest, studio: Studio = Depends(get_studio)) -> StreamingResponse:
    """OpenAI-compatible speech. wav, pcm and mp3 stream sentence by sentence as they are made."""
    if body.model not in OPENAI_MODELS and body.model not in studio.registry.names():
        raise BadInput(
            f"model '{body.model}' is unknown; use {', '.join(OPENAI_MODELS)} (the default engine) "
            f"or an engine name: {', '.join(studio.registry.names())}",
            "unknown_model",
        )
    request = SpeechRequest(
        text=body.input, voice=body.voice, engine=body.model, speed=body.speed, language=body.language
    )
    chunks = studio.speech.stream(request)
    # Errors (unknown voice, engine missing, nothing to speak) surface here as JSON, before streaming;
    # the stream yields at least one chunk or raises.
    first = next(chunks)
    everything = itertools.chain([first], _ahead(chunks))
    return StreamingResponse(
        _encode_stream(everything, first.sample_rate, body.response_format),
        media_type=audio_io.media_type(body.response_format),
    )


def _ahead(chunks: Iterator[AudioChunk], depth: int = 2) -> Iterator[AudioChunk]:
    """Keep synthesizing in a thread while earlier chunks are sent, instead of one sentence per pull;
    stops when the client goes away (the response closes this generator)."""
    buffer: queue.Queue[AudioChunk | BaseException | None] = queue.Queue(depth)
    stopped = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stopped.is_set():
                    try:
                        buffer.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stopped.is_set():
                    return
            buffer.put(None)
        except BaseException as error:  # surfaced to the consumer
            buffer.put(error)

    threading.Thread(target=produce, name="speech-ahead", daemon=True).start()
    try:
        while (item := buffer.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()


def _encode_stream(chunks: Iterator[AudioChunk], sample_rate: int, fmt: str) -> Iterator[bytes]:
    if fmt == "wav":
        yield audio_io.wav_stream_header(sample_rate)
        fmt = "pcm"
    if fmt == "pcm":
        yield from (audio_io.pcm16(chunk.audio) for chunk in chunks)
    elif fmt == "mp3":  # MP3 frames concatenate into a valid stream
        yield from (audio_io.encode(chunk.audio, sample_rate, "mp3") for chunk in chunks)
    else:  # containers that need the whole signal
        import numpy as np

        yield audio_io.encode(np.concatenate([chunk.audio for chunk in chunks]), sample_rate, fmt)
