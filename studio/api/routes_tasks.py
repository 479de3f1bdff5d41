"""Task routes (GPT-SoVITS training-service style), shared by every long job."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse
from pathvalidate import sanitize_filename

from studio.api.deps import TASK_ID, caller, get_studio, read_upload
from studio.api.openapi import TASK_FROM_RESPONSE, TASK_OPERATIONS, links
from studio.api.schemas import RunRequest, StepRequest, TaskCreate, TaskOut, errors
from studio.core import Studio
from studio.errors import BadInput, Conflict, NotFound
from studio.tasks.records import Task

router = APIRouter(tags=["tasks"], dependencies=[Depends(caller)], responses=errors(400, 401, 422))
# The path convertor `task_id` checks the id; a malformed one matches no route (404).
TaskId = PathParam(
    description="a task's id (from the call that made it)", json_schema_extra={"pattern": TASK_ID}
)
CREATED_TASK_LINKS = links(
    TASK_FROM_RESPONSE,
    *TASK_OPERATIONS,
    "upload_file",
    "run_remaining_steps",
    "list_clips",
    "edit_clips",
    "preflight",
    "export_dataset",
    "import_dataset",
)


def task_out(studio: Studio, task: Task, queue_positions: dict[str, int] | None = None) -> TaskOut:
    """`queue_positions` (the runner's, read once) when listing many tasks."""
    positions = studio.runner.queue_positions() if queue_positions is None else queue_positions
    return TaskOut(
        **{k: v for k, v in task.to_dict().items() if k in TaskOut.model_fields},
        queue_position=positions.get(task.task_id, 0),
        files=studio.store.files(task.task_id),
    )


def owned_task(studio: Studio, task_id: str, owner: str, change: bool = False) -> Task:
    """The task if `owner` made it (or, to read, if it is shared); others get the same 404 as for no task."""
    try:
        task = studio.store.get(task_id)
    except KeyError:
        task = None
    if task is None or not (task.owner == owner or (task.shared and not change)):
        raise NotFound(f"no task '{task_id}'", "task_not_found")
    return task


@router.post("/api/v1/task/create", responses=CREATED_TASK_LINKS)
def create_task(
    body: TaskCreate, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> TaskOut:
    """Create a task of `kind` (or `config.kind`). Without a kind it is a training task, as the
    GPT-SoVITS training service's own client creates one (`exp_name`, `language`, `batch_size`,
    `epochs_s1`, `epochs_s2`, `gpu_id`: the result's `config_notes` say what became of each key)."""
    kind = body.kind or body.config.get("kind") or "training"
    if kind not in studio.runner.kinds:
        raise BadInput(f"kind must be one of {', '.join(studio.runner.kinds)} (got {kind!r})", "unknown_kind")
    config = {k: v for k, v in body.config.items() if k != "kind"}
    return task_out(studio, studio.runner.submit(kind, body.task_name, config, owner))


@router.get("/api/v1/tasks")
def list_tasks(
    studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> dict[str, list[TaskOut]]:
    """Your tasks, newest first."""
    positions = studio.runner.queue_positions()
    return {"tasks": [task_out(studio, task, positions) for task in studio.store.list(owner=owner)]}


@router.get("/api/v1/task/{task_id:task_id}", responses=errors(404))
def get_task(
    task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> TaskOut:
    return task_out(studio, owned_task(studio, task_id, owner))


@router.post("/api/v1/task/{task_id:task_id}/step/{step}", responses=errors(404, 409))
def run_step(
    body: StepRequest,
    task_id: str = TaskId,
    step: str = PathParam(description="a step of the task's kind", json_schema_extra={"x-choices": "steps"}),
    studio: Studio = Depends(get_studio),
    owner: str = Depends(caller),
) -> TaskOut:
    """Run one named step of a stepwise task (training) with its params; it is queued behind any steps
    already asked for. Kinds without steps run as a whole (409)."""
    owned_task(studio, task_id, owner, change=True)
    return task_out(studio, studio.runner.queue_steps(task_id, [step], body.params))


@router.post("/api/v1/task/{task_id:task_id}/run", responses=errors(404, 409))
def run_remaining_steps(
    body: RunRequest,
    task_id: str = TaskId,
    studio: Studio = Depends(get_studio),
    owner: str = Depends(caller),
) -> TaskOut:
    """Run every step of a stepwise task that is not done or skipped yet, in order. `params` maps a
    step name to that step's params (steps not named keep the params they were last given)."""
    task = owned_task(studio, task_id, owner, change=True)
    remaining = task.remaining_steps
    if task.steps and not remaining:
        raise Conflict(f"every step of task '{task_id}' is done; run a step by name to redo it", "no_steps")
    return task_out(studio, studio.runner.queue_steps(task_id, remaining, per_step=body.params))


@router.post("/api/v1/task/{task_id:task_id}/cancel", responses=errors(404, 409))
def cancel_task(
    task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> TaskOut:
    owned_task(studio, task_id, owner, change=True)
    return task_out(studio, studio.runner.cancel(task_id))


@router.post("/api/v1/task/{task_id:task_id}/share", responses=errors(404))
def share_task(
    task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> TaskOut:
    """Let anyone who knows the task id see and download it (cancel and delete stay the owner's)."""
    owned_task(studio, task_id, owner, change=True)
    return task_out(studio, studio.store.update(task_id, shared=True))


@router.delete("/api/v1/task/{task_id:task_id}", responses=errors(404, 409))
def delete_task(
    task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> dict[str, str]:
    owned_task(studio, task_id, owner, change=True)
    studio.runner.delete(task_id)
    return {"task_id": task_id, "status": "deleted"}


@router.post("/api/v1/task/{task_id:task_id}/files/upload", responses=errors(404, 413))
async def upload_file(
    file: UploadFile,
    task_id: str = TaskId,
    studio: Studio = Depends(get_studio),
    owner: str = Depends(caller),
) -> dict[str, object]:
    owned_task(studio, task_id, owner, change=True)
    sent = Path(file.filename or "")
    # Cut long names before cleaning them, keeping the type: the steps go by the extension.
    name = sanitize_filename(sent.stem[:200] + sent.suffix[:16], replacement_text="_").lstrip(".")
    if not name:
        raise BadInput("the uploaded file needs a name", "bad_filename")
    data = await read_upload(file, studio)
    if not data:
        raise BadInput(f"'{name}' is empty (0 bytes): upload the file again", "empty_file")
    saved = studio.store.save_input(task_id, name, data)
    return {"task_id": task_id, "filename": saved, "size": len(data)}


@router.get(
    "/api/v1/task/{task_id:task_id}/files/download/{filename:path}",
    response_class=FileResponse,
    responses={200: {"content": {"*/*": {}}, "description": "the file"}} | errors(404),
)
def download_file(
    filename: str, task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> FileResponse:
    owned_task(studio, task_id, owner)
    path = studio.store.file_path(task_id, filename)
    if path is None:
        raise NotFound(f"task '{task_id}' has no file '{filename}'", "file_not_found")
    return FileResponse(path, filename=path.name)


@router.get("/api/v1/task/{task_id:task_id}/logs", response_class=PlainTextResponse, responses=errors(404))
def task_logs(
    task_id: str = TaskId, studio: Studio = Depends(get_studio), owner: str = Depends(caller)
) -> PlainTextResponse:
    owned_task(studio, task_id, owner)
    return PlainTextResponse(studio.store.read_log(task_id))
