"""What every training step sees: where the task's files live, and how to report and stop.

A step is a function `step(workspace, params, report) -> dict` (its result, kept on the task). It
reads what earlier steps left in the workspace and writes its own outputs there, so a step can be
run again (after proofreading, with other parameters, after a crash) without redoing the others.
A step the chosen backend does not use raises `StepSkipped("why")` (the step shows `skipped`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from studio.tasks.runner import StepSkipped

__all__ = ["StepReport", "StepSkipped", "Workspace"]


class StepReport(Protocol):
    """Progress, logs and cancel for one running step (the task context implements it)."""

    def log(self, message: str) -> None: ...

    def step_progress(self, fraction: float) -> None:
        """How far the step is, 0..1; raises TaskCancelled when a cancel was asked for."""

    def check_cancelled(self) -> None: ...

    @property
    def cancelled(self) -> bool: ...


@dataclass(frozen=True)
class Workspace:
    """The file layout of one training task, under its task folder.

    Served to the owner (listed, downloadable): `inputs/` (uploads), `dataset/` (the Piper-format
    dataset: `metadata.csv`, `wavs/`, `clips.json` with per-clip text, confidence, duration and
    whether it is dropped), `voice/` (exported model), `test/`. Working files live under `_work/`
    (not served).
    """

    root: Path

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def work(self) -> Path:
        return self.root / "_work"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def voice(self) -> Path:
        return self.root / "voice"

    @property
    def test(self) -> Path:
        return self.root / "test"
