"""Request and response bodies of the REST API (pydantic); see docs at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AudioFormat = Literal["wav", "mp3", "flac", "ogg"]
OpenAIFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class SpeechParameters(BaseModel):
    speed: float = Field(1.0, ge=0.25, le=4.0)
    pitch: float = Field(1.0, ge=0.5, le=2.0, description="pitch factor; 2.0 is an octave up")
    emotion: Literal["neutral"] = Field("neutral", description="the embedded engines speak neutrally only")


class SynthesizeRequest(BaseModel):
    text: str = Field(..., description="up to 20,000 characters")
    voice_id: str = Field("jf_alpha", description="a voice id from GET /api/v1/voices, or a Kokoro blend")
    engine: str | None = Field(None, description="engine name; default: the engine that owns the voice")
    format: AudioFormat = "wav"
    language: str | None = Field(
        None, description="auto (default: each sentence's own, by its script), zh, ja, en, en-gb"
    )
    parameters: SpeechParameters = Field(default_factory=SpeechParameters)


class OpenAISpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the SDK may send fields we do not use (instructions, ...)

    model: str = "tts-1"
    input: str
    voice: str = "alloy"
    response_format: OpenAIFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    language: str | None = Field(None, description="studio extension: auto (default), zh, ja, en, en-gb")


class EngineOut(BaseModel):
    name: str
    display_name: str
    description: str
    capabilities: list[str]
    languages: list[str]
    license: str
    sample_rate: int
    state: str
    missing: list[str]
    device: str


class VoiceOut(BaseModel):
    id: str
    name: str
    type: str
    engine: str
    language: str
    gender: str
    description: str


class TaskCreate(BaseModel):
    task_name: str = ""
    kind: str | None = Field(
        None, description="task kind; may also be given as config.kind; neither: a training task"
    )
    config: dict[str, Any] = Field(default_factory=dict)


class StepRequest(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict)


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
