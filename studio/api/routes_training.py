"""Training routes beside the task routes: proofreading the dataset, preflight, Piper dataset import/export.

A training task is created, fed and run through the task routes (`kind: "training"`, uploads, steps);
these cover what only a training task has.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, UploadFile
from fastapi.responses import Response

from studio.api.deps import caller, get_studio, read_upload
from studio.api.routes_tasks import TaskId, owned_task
from studio.api.schemas import ClipEdits, errors
from studio.core import Studio
from studio.errors import NotFound
from studio.tasks.records import Task

router = APIRouter(tags=["training"], dependencies=[Depends(caller)], responses=errors(400, 401, 404, 422))


def training_task(studio: Studio, task_id: str, owner: str, change: bool = False) -> Task:
    """The task as `owned_task` finds it, if it is a training task; a task of another kind is a 404."""
    task = owned_task(studio, task_id, owner, change)
    if task.kind != "training":
        raise NotFound(f"task '{task_id}' is a {task.kind} task, not a training task", "not_training")
    return task


@router.get("/api/v1/training/{task_id:task_id}/clips")
def list_clips(
    task_id: str = TaskId,
    order: Literal["confidence", "recording"] = "confidence",
    studio: Studio = Depends(get_studio),
    owner: str = Depends(caller),
) -> dict[str, list[dict[str, Any]]]:
    """The dataset's clips for proofreading; `order=confidence` puts the least certain transcripts first, `recording` keeps their order."""
    training_task(studio, task_id, owner)
    return {"clips": studio.training.clips(task_id, low_confidence_first=order == "confidence")}


@router.patch("/api/v1/training/{task_id:task_id}/clips")
def edit_clips(
    body: ClipEdits, task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> dict[str, list[dict[str, Any]]]:
    """Correct transcripts and drop or keep clips; metadata.csv follows."""
    training_task(studio, task_id, owner, change=True)
    edits = [edit.model_dump(exclude_none=True) for edit in body.edits]
    return {"clips": studio.training.edit_clips(task_id, edits)}


@router.get("/api/v1/training/{task_id:task_id}/preflight")
def preflight(
    task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> dict[str, Any]:
    """What would make training fail (disk, memory, dataset size), each with what to change."""
    problems = studio.training.task_preflight(training_task(studio, task_id, owner))
    return {"ok": not problems, "problems": problems}


@router.get(
    "/api/v1/training/{task_id:task_id}/dataset/export",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the Piper dataset"}} | errors(409),
)
def export_dataset(
    task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> Response:
    """The kept clips as a Piper dataset (metadata.csv + wavs/) in a zip."""
    training_task(studio, task_id, owner)
    data = studio.training.export_task_dataset(task_id)
    headers = {"Content-Disposition": f'attachment; filename="dataset-{task_id}.zip"'}
    return Response(data, media_type="application/zip", headers=headers)


@router.post("/api/v1/training/{task_id:task_id}/dataset/import", responses=errors(413, 415))
async def import_dataset(
    file: UploadFile,
    task_id: str = TaskId,
    studio: Studio = Depends(get_studio),
    owner: str = Depends(caller),
) -> dict[str, Any]:
    """Bring a Piper dataset made elsewhere (a zip of metadata.csv + wavs/): the dataset steps can be skipped."""
    training_task(studio, task_id, owner, change=True)
    data = await read_upload(file, studio)
    clips = studio.training.import_task_dataset(task_id, data)
    return {"clips": len(clips), "seconds": round(sum(float(c["duration"]) for c in clips), 2)}
