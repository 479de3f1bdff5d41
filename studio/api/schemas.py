"""Request and response bodies of the REST API (pydantic); see docs at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from studio import audio as audio_io
from studio.services.dialogue import DialogueConfig
from studio.services.pronunciation import PHONEMES, RESPELLING
from studio.tasks.configs import LANGUAGE_HELP, LanguageName, text_to_speak

AudioFormat = Literal["wav", "mp3", "flac", "ogg"]
OpenAIFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class RequestBody(BaseModel):
    """A JSON request body: values must have the types the schema states (no "1" for 1, no 0 for
    false), so the OpenAPI document and the server agree on what is valid."""

    model_config = ConfigDict(strict=True)


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: e.g. unknown_voice, nothing_to_speak")
    message: str = Field(description="what went wrong and what to change")
    type: str | None = Field(
        None,
        description="/v1/* only (OpenAI's error shape): invalid_request_error, authentication_error, "
        "rate_limit_error, server_error",
    )
    param: str | None = Field(None, description="/v1/* only: the request field the error is about, if one")


class ErrorBody(BaseModel):
    """Every error the API answers with (on /v1/*, OpenAI's error shape: `type` and `param` too)."""

    error: ErrorDetail


_ERROR_MEANINGS = {
    400: "the body could not be read (not JSON, or a broken multipart form)",
    401: "an API key is needed, or the one sent is not valid",
    404: "no such resource (the message names it)",
    409: "the resource is not in a state that allows this",
    413: "too large (the message names the limit)",
    415: "a file that is not what it should be (the message says what it must be)",
    422: "invalid input (the message says what to fix)",
    429: "rate limit or daily quota reached (see Retry-After)",
    503: "the engine cannot run on this server (the message says what it needs)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route answers with."""
    return {status: {"model": ErrorBody, "description": _ERROR_MEANINGS[status]} for status in statuses}


SPEECH_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "description": 'JSON: {"type": "speech.audio.delta", "audio": base64}, then {"type": '
            '"speech.audio.done", "usage": {"input_tokens", "output_tokens", "total_tokens"}}; '
            '{"type": "error", "error": {"message", "code"}} if it fails after it began',
        },
    },
}


def audio_response(formats: tuple[str, ...], events: bool = False) -> dict[int | str, dict[str, Any]]:
    """The 200 response of a route that answers with audio in one of `formats` (or, with `events`,
    server-sent events carrying it)."""
    content = {
        audio_io.media_type(fmt): {"schema": {"type": "string", "format": "binary"}} for fmt in formats
    }
    if events:  # each event (OpenAPI before 3.2: `schema` describes one event)
        content["text/event-stream"] = {"schema": SPEECH_EVENT}
    return {200: {"content": content, "description": "the audio"}}


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    """OpenAI's `GET /v1/models` list."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class AudioModelList(BaseModel):
    """The TTS models as Open WebUI reads them from `<base>/audio/models`."""

    models: list[dict[str, str]]


class OpenAIVoice(BaseModel):
    id: str = Field(description="what to send as `voice`")
    name: str
    engine: str
    language: str
    type: Literal["builtin", "library", "openai"]


class OpenAIVoiceList(BaseModel):
    """The voices as Open WebUI reads them from `<base>/audio/voices` (`id` and `name` of each)."""

    voices: list[OpenAIVoice]


class SpeechParameters(RequestBody):
    speed: float = Field(1.0, ge=0.25, le=4.0)
    pitch: float = Field(1.0, ge=0.5, le=2.0, description="pitch factor; 2.0 is an octave up")
    emotion: Literal["neutral"] = Field("neutral", description="the embedded engines speak neutrally only")


class SynthesizeRequest(RequestBody):
    text: str = Field(..., json_schema_extra=text_to_speak("max_text_chars"))
    voice_id: str = Field("jf_alpha", description="a voice id from GET /api/v1/voices, or a Kokoro blend")
    engine: str | None = Field(
        None,
        description="an engine that can speak here; default: the engine that owns the voice",
        json_schema_extra={"x-choices": "engines"},
    )
    format: AudioFormat = "wav"
    language: LanguageName | None = Field(None, description=LANGUAGE_HELP)
    parameters: SpeechParameters = Field(default_factory=SpeechParameters)


class OpenAISpeechRequest(RequestBody):
    model_config = ConfigDict(strict=True, extra="ignore")  # the SDK may send fields we do not use

    model: str = Field(
        "tts-1",
        description="tts-1, tts-1-hd, gpt-4o-mini-tts (the default engine) or an engine that can speak here",
        json_schema_extra={"x-choices": "models"},
    )
    input: str = Field(..., json_schema_extra=text_to_speak("max_text_chars"))
    voice: str = Field(
        "alloy",
        description="an OpenAI name (alloy, echo, ...), a voice id from GET /v1/audio/voices, a Kokoro "
        'blend, or (studio extension) `narration_voice|quote_voice`: text in double quotes ("", “”, «», '
        "「」) is spoken by the second voice, the rest (*narration* too) by the first",
    )
    response_format: OpenAIFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(
        None,
        description="gpt-4o-mini-tts style instructions: accepted and ignored (no engine here has style "
        "control); the answer then carries `X-Instructions: ignored`",
    )
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="audio: the audio bytes; sse: server-sent events, a `speech.audio.delta` (base64 "
        "`audio`) per sentence as it is made, then `speech.audio.done` with `usage` (tokens counted as "
        "characters of `input`; every model and format)",
    )
    language: LanguageName | None = Field(None, description="studio extension: " + LANGUAGE_HELP)


class DialogueBody(DialogueConfig):
    """A dialogue task's config, and how to answer."""

    task_name: str = ""
    wait: bool = Field(False, description="answer when the task has finished")


class VoicePatch(RequestBody):
    name: str | None = Field(None, max_length=80)
    description: str | None = Field(None, max_length=500)
    tags: list[str] | None = None
    transcript: str | None = Field(None, max_length=2000)


class FitBody(RequestBody):
    mode: Literal["quick", "thorough"] = "thorough"


class ClipEdit(RequestBody):
    id: str = Field(description="a clip id from GET .../clips")
    text: str | None = Field(None, max_length=2000, description="the corrected transcript")
    dropped: bool | None = None


class ClipEdits(RequestBody):
    edits: list[ClipEdit] = Field(default_factory=list)


class VoiceOut(BaseModel):
    id: str
    name: str
    type: str
    engine: str
    language: str
    gender: str
    description: str


class TaskCreate(RequestBody):
    task_name: str = ""
    kind: str | None = Field(
        None,
        description="task kind; may also be given as config.kind; neither: a training task",
        json_schema_extra={"x-choices": "task_kinds"},
    )
    config: dict[str, Any] = Field(default_factory=dict)


class StepRequest(RequestBody):
    params: dict[str, Any] = Field(default_factory=dict, description="the step's params")


class RunRequest(RequestBody):
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="step name -> that step's params (steps not named keep theirs)"
    )


class TaskOut(BaseModel):
    task_id: str
    kind: str
    task_name: str
    status: str
    progress: float
    current_step: str
    eta_seconds: float | None
    queue_position: int
    steps: dict[str, str]
    remaining_steps: list[str] = Field(
        description="steps of a stepwise task not done or skipped yet; a `completed` task with some "
        "left is waiting for them to be asked for"
    )
    error_message: str
    files: list[str]
    result: dict[str, Any]
    config: dict[str, Any]
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None


LexiconLanguage = Literal["en", "en-us", "en-gb", "ja", "zh"]


class PronunciationBody(RequestBody):
    """A lexicon entry's pronunciation: phonemes (IPA, for Kokoro and Piper), a respelling (said
    instead of the word by other engines, and by those two when there are no phonemes), or both."""

    model_config = ConfigDict(
        strict=True, json_schema_extra={"anyOf": [{"required": ["phonemes"]}, {"required": ["respelling"]}]}
    )

    language: LexiconLanguage = Field(description='"en" applies to en-us and en-gb; a variant\'s own wins')
    phonemes: str | SkipJsonSchema[None] = Field(
        None,
        description="IPA as the engines' G2P writes it, e.g. təmˈɑːtoʊ (no spaces, no slashes)",
        json_schema_extra={"pattern": PHONEMES.pattern},
    )
    respelling: str | SkipJsonSchema[None] = Field(
        None,
        description='plain text said instead, e.g. "win" for Nguyen',
        json_schema_extra={"pattern": RESPELLING.pattern},
    )

    @field_validator("phonemes", "respelling", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("leave it out instead of sending null")
        return value


class PronunciationOut(BaseModel):
    word: str = Field(description="the word in lower case, as entries are keyed")
    language: str
    phonemes: str | None
    respelling: str | None
    updated_at: float


class PronunciationList(BaseModel):
    pronunciations: list[PronunciationOut]


class PronunciationDeleted(BaseModel):
    word: str
    language: str
    deleted: bool = Field(description="false: there was no such entry (deleting is idempotent)")


class CaptionedSpeechRequest(SynthesizeRequest):
    """`/api/v1/tts/synthesize`'s body; the answer is JSON: the audio (base64) and its word timings."""


class CaptionedWord(BaseModel):
    word: str = Field(description='as written in the text, e.g. "40-60°C"')
    spoken: str = Field(description='as said, e.g. "forty to sixty degrees Celsius"')
    start: float = Field(description="seconds from the start of the audio")
    end: float


class CaptionedSpeech(BaseModel):
    audio: str = Field(description="the audio file in `format`, base64")
    format: AudioFormat
    sample_rate: int
    duration: float = Field(description="seconds")
    words: list[CaptionedWord] = Field(
        description="every word with its times (empty for engines that do not report them: only the "
        "embedded kokoro and piper do)"
    )
    srt: str = Field(description="phrase-level subtitles (SRT): a few words a cue, broken at punctuation")
