"""Health, engines and the voice list."""

from __future__ import annotations

import psutil
from fastapi import APIRouter, Depends

from engines.registry import EngineReport
from studio.api.deps import caller, get_studio
from studio.api.openapi import TASK_LINKS
from studio.api.routes_tasks import task_out
from studio.api.schemas import TaskOut, errors
from studio.core import Studio

router = APIRouter()


@router.get("/health", tags=["system"])
def health(studio: Studio = Depends(get_studio)) -> dict:
    memory = psutil.virtual_memory()
    process = psutil.Process()
    return {
        "status": "healthy",
        "version": studio.version,
        "model_loaded": studio.registry.any_loaded(),
        "gpu_available": studio.allocator.gpu_available,
        "memory_usage": {
            "total": f"{memory.total / 2**30:.1f}GB",
            "used": f"{(memory.total - memory.available) / 2**30:.1f}GB",
            "free": f"{memory.available / 2**30:.1f}GB",
            "process_rss": f"{process.memory_info().rss / 2**20:.0f}MB",
        },
        "engines": [{"name": r.name, "state": r.state} for r in studio.registry.reports()],
        # With STUDIO_RAY_ADDRESS: each node, what it offers, the engines hosted on it, what it made.
        "cluster": studio.cluster.report() if studio.cluster else None,
    }


@router.get("/api/v1/engines", tags=["system"], dependencies=[Depends(caller)], responses=errors(401))
def engines(studio: Studio = Depends(get_studio)) -> dict[str, list[EngineReport]]:
    return {"engines": studio.registry.reports()}


@router.post(
    "/api/v1/engines/{name}/install",
    tags=["system"],
    status_code=202,
    responses=TASK_LINKS | errors(401, 404, 409),
)
def install_engine(name: str, studio: Studio = Depends(get_studio), owner: str = Depends(caller)) -> TaskOut:
    """Install the engine's own pinned environment (from the package registries) as a task: follow it
    with `GET /api/v1/task/{task_id}` (progress, step, log) and cancel it like any task."""
    return task_out(
        studio, studio.runner.submit("engine_install", f"install {name}", {"engine": name}, owner)
    )
