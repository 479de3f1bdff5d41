"""Dialogue route: a script becomes a "dialogue" task (or, with "wait": true, its finished result)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from studio.api.deps import get_studio, rate_limited_caller
from studio.api.openapi import TASK_LINKS
from studio.api.routes_tasks import task_out
from studio.api.schemas import DialogueBody, TaskOut, errors
from studio.core import Studio

router = APIRouter(tags=["dialogue"])


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
    task = studio.runner.submit("dialogue", body.task_name or "dialogue", body, owner)
    if body.wait:
        task = studio.runner.wait(task.task_id, timeout=studio.settings.max_wait_seconds)
        if not task.status.finished:  # bounded: the client polls the task from here
            response.status_code = 202
    return task_out(studio, task)
