"""Dialogue route: a script becomes a "dialogue" task (or, with "wait": true, its finished result)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import Field, StringConstraints

from studio.api.deps import get_studio, rate_limited_caller
from studio.api.openapi import TASK_LINKS
from studio.api.routes_tasks import task_out
from studio.api.schemas import LANGUAGE_HELP, LanguageName, RequestBody, TaskOut, errors, text_to_speak
from studio.core import Studio
from studio.services.dialogue import DialogueRequest

router = APIRouter(tags=["dialogue"])


class TurnOverrideBody(RequestBody):
    speed: float | None = Field(None, ge=0.25, le=4.0)
    pause_ms: int | None = Field(None, ge=0, le=10_000)
    language: LanguageName | None = Field(None, description="this turn's language: " + LANGUAGE_HELP)


class DialogueBody(RequestBody):
    script: str = Field(
        ...,
        description="[S1]/(s1)/Speaker 1:/Name: turns; untagged lines alternate S1, S2",
        json_schema_extra=text_to_speak("max_dialogue_chars"),
    )
    voices: dict[str, str] = Field(default_factory=dict, description='speaker ("S1" or its name) -> voice id')
    format: Literal["wav", "mp3", "flac"] = "wav"
    pause_ms: int = Field(350, ge=0, le=10_000, description="silence between turns")
    speed: float = Field(1.0, ge=0.25, le=4.0)
    normalize: bool = Field(False, description="spell out numbers and abbreviations before synthesis")
    overrides: dict[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,6}$")], TurnOverrideBody] = Field(
        default_factory=dict, description="turn index (0-based, as a string) -> speed/pause/language"
    )
    language: LanguageName | None = Field(None, description=LANGUAGE_HELP)
    languages: dict[str, LanguageName] = Field(
        default_factory=dict, description='speaker ("S1" or its name) -> language, over `language`'
    )
    engine: str | None = Field(
        None,
        description="a dialogue engine that can run here (moss-ttsd, with a GPU and its weights) speaks the "
        "whole script in one pass; default: each voice's own engine, turn by turn",
        json_schema_extra={"x-choices": "dialogue_engines"},
    )
    task_name: str = ""
    wait: bool = Field(False, description="answer when the task has finished")


@router.post(
    "/api/v1/dialogue",
    responses=TASK_LINKS
    | {202: {"model": TaskOut, "description": "waited max_wait_seconds: the task, still running"}}
    | errors(400, 401, 404, 413, 422, 429, 503),
)
def create_dialogue(
    body: DialogueBody,
    response: Response,
    studio: Studio = Depends(get_studio),
    owner: str = Depends(rate_limited_caller),
) -> TaskOut:
    """A dialogue task. With `"wait": true` it answers when the task has finished, or with 202 and the
    task still running after `max_wait_seconds` (poll `GET /api/v1/task/{task_id}` from there)."""
    config = body.model_dump(exclude={"wait", "task_name"}, exclude_none=True)
    studio.dialogue.plan(
        DialogueRequest.from_config(config)
    )  # bad scripts and voices: 4xx now, not a failed task
    task = studio.runner.submit("dialogue", body.task_name or "dialogue", config, owner)
    if body.wait:
        task = studio.runner.wait(task.task_id, timeout=studio.settings.max_wait_seconds)
        if not task.status.finished:  # bounded: the client polls the task from here
            response.status_code = 202
    return task_out(studio, task)
