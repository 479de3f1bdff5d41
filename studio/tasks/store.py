"""Task store: one SQLite (WAL) table of long jobs, one folder per task for its files and log.

Every long job (speech to file, dialogue, training, voice fitting, video) is a row here, so the UI,
the REST task routes and a restarted server all see the same truth.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from studio.tasks.records import Task, TaskStatus

_COLUMNS = (
    "task_id, kind, task_name, owner, status, progress, current_step, eta_seconds, config, result, steps, "
    "error_message, shared, created_at, updated_at, started_at, finished_at"
)
_JSON_FIELDS = ("config", "result", "steps")


class TaskStore:
    """Persistent task records plus each task's folder (`<root>/<task_id>/`) and log file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "tasks.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS tasks (
                task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, task_name TEXT NOT NULL, owner TEXT NOT NULL,
                status TEXT NOT NULL, progress REAL NOT NULL, current_step TEXT NOT NULL, eta_seconds REAL,
                config TEXT NOT NULL, result TEXT NOT NULL, steps TEXT NOT NULL, error_message TEXT NOT NULL,
                shared INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL)"""
        )

    def create(
        self,
        kind: str,
        task_name: str,
        config: dict[str, Any],
        owner: str = "",
        steps: list[str] | None = None,
        result: dict[str, Any] | None = None,
    ) -> Task:
        now = time.time()
        task = Task(
            task_id=uuid.uuid4().hex[:16],
            kind=kind,
            task_name=task_name or kind,
            owner=owner,
            status=TaskStatus.PENDING,
            config=config,
            result=result or {},
            steps=dict.fromkeys(steps or [], "pending"),
            created_at=now,
            updated_at=now,
        )
        self.folder(task.task_id).mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._execute_write(task, "INSERT")
        return task

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _from_row(row) if row else None

    def list(self, owner: str | None = None, status: TaskStatus | None = None) -> list[Task]:
        query, params = f"SELECT {_COLUMNS} FROM tasks WHERE 1=1", []
        if owner is not None:
            query, params = query + " AND owner = ?", [*params, owner]
        if status is not None:
            query, params = query + " AND status = ?", [*params, status.value]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at DESC", params).fetchall()
        return [_from_row(row) for row in rows]

    def update(self, task_id: str, **changes: Any) -> Task:
        """Change some fields; read and write are one step, so writers of other fields (a step's
        progress, a client queueing steps) never undo each other's changes, nor bring back a deleted row."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                raise KeyError(task_id)
            task = _from_row(row)
            for key, value in changes.items():
                setattr(task, key, value)
            task.updated_at = time.time()
            self._execute_write(task, "REPLACE")
        return task

    def delete(self, task_id: str) -> None:
        import shutil

        with self._lock:
            self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
        shutil.rmtree(self.folder(task_id), ignore_errors=True)

    # ---- files and logs ----------------------------------------------------------------------
    def folder(self, task_id: str) -> Path:
        if not task_id.isalnum():  # ids are hex; anything else must not reach the file system
            raise KeyError(task_id)
        return self.root / task_id

    def log_path(self, task_id: str) -> Path:
        return self.folder(task_id) / "task.log"

    def append_log(self, task_id: str, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        path = self.log_path(task_id)
        if not path.parent.exists():  # deleted while it ran
            raise KeyError(task_id)
        with path.open("a", encoding="utf-8") as log:
            for line in message.splitlines() or [""]:
                log.write(f"{stamp} {line}\n")

    def read_log(self, task_id: str) -> str:
        path = self.log_path(task_id)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def files(self, task_id: str) -> list[str]:
        """Output files of a task, relative to its folder (the log and working parts excluded)."""
        folder = self.folder(task_id)
        if not folder.exists():
            return []
        return sorted(
            str(p.relative_to(folder))
            for p in folder.rglob("*")
            if p.is_file() and p.name != "task.log" and not p.relative_to(folder).parts[0].startswith("_")
        )

    def save_input(self, task_id: str, name: str, data: bytes) -> str:
        """Write an uploaded file as `inputs/<name>` of the task (a clean name: the caller checks it),
        log it, and return that path relative to the task's folder."""
        target = self.folder(task_id) / "inputs" / name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        self.append_log(task_id, f"uploaded inputs/{name} ({len(data)} bytes)")
        return f"inputs/{name}"

    def file_path(self, task_id: str, filename: str) -> Path | None:
        """Where one of the task's files (a name `files` lists) is; None for any other name, and for
        any path that leads out of the task's folder."""
        folder = self.folder(task_id).resolve()
        path = (folder / filename).resolve()
        if not path.is_relative_to(folder) or not path.is_file() or filename not in self.files(task_id):
            return None
        return path

    def _execute_write(self, task: Task, verb: str) -> None:
        """INSERT or REPLACE the task's row; the caller holds the lock."""
        values = [
            json.dumps(getattr(task, name)) if name in _JSON_FIELDS else getattr(task, name)
            for name in _COLUMNS.split(", ")
        ]
        values[_COLUMNS.split(", ").index("status")] = task.status.value
        self._db.execute(f"{verb} INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' * len(values))})", values)


def _from_row(row: tuple[Any, ...]) -> Task:
    data = dict(zip(_COLUMNS.split(", "), row, strict=True))
    for name in _JSON_FIELDS:
        data[name] = json.loads(data[name])
    data["status"] = TaskStatus(data["status"])
    data["shared"] = bool(data["shared"])
    return Task(**data)
