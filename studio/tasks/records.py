"""A task's record as the store keeps it and every layer reads it: status, steps, config, result.

Kept apart from the store (which owns the database and the task folders), so the REST routes and
the services can name a task without reaching for its storage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

FINISHED_STEP_STATES = ("done", "skipped")


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass
class Task:
    task_id: str
    kind: str
    task_name: str
    owner: str
    status: TaskStatus
    progress: float = 0.0
    current_step: str = ""
    eta_seconds: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)  # step name -> pending/running/done/skipped/failed
    error_message: str = ""
    shared: bool = False  # readable by anyone who knows the id
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def remaining_steps(self) -> list[str]:
        """A stepwise task's steps not done or skipped yet, in the kind's order."""
        return [step for step, state in self.steps.items() if state not in FINISHED_STEP_STATES]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"status": self.status.value, "remaining_steps": self.remaining_steps}
