"""Task configs: one pydantic model per task kind says what a task of that kind is asked to do.

The same model is the REST body (or its core, when a route adds `task_name`/`wait`), what a UI tab
builds, and what the task store keeps: `TaskRunner.submit` validates it, the kind's `prepare`
checks it against the server (voices, engines, images) and fills in what it resolved, and that
planned config is stored; the task reads it back typed (`TaskContext.request`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from engines.text import LANGUAGE_SPELLINGS
from studio.errors import BadInput

LanguageName = Literal[LANGUAGE_SPELLINGS]  # type: ignore[valid-type]
LANGUAGE_HELP = (
    "auto (default: each sentence's own, by its script), zh, ja, en, en-gb (or another spelling listed)"
)
# Text to speak has a letter or digit of a script the studio speaks (Latin, kana, Han) somewhere.
SPEAKABLE = r"[0-9A-Za-z\u00C0-\u024F\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF]"


def text_to_speak(limit: str) -> dict[str, str]:
    """Schema extra for a text to speak, whose maximum length is the server setting `limit`: the
    OpenAPI document states the running server's value (studio/api/openapi.py). The speech service
    enforces them all (422 empty_text, 413 text_too_long, 422 nothing_to_speak), with messages that
    say what to change."""
    return {"minLength": 1, "x-limited-by": limit, "pattern": SPEAKABLE}


def describe_problems(problems: Iterable[Mapping[str, Any]], prefix: str = "", skip: str = "") -> str:
    """Pydantic's errors as one message naming each field: `config.speed: Input should be ...`."""
    lines = []
    for item in problems:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != skip)
        lines.append(f"{'.'.join(p for p in (prefix, where) if p) or 'body'}: {item.get('msg', 'invalid')}")
    return "; ".join(lines)


class TaskConfig(BaseModel):
    """A task kind's config. Strict (no "1" for 1) and closed (an unknown key is an error that names
    it), like the REST bodies."""

    model_config = ConfigDict(strict=True, extra="forbid")
    _notes: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str = "config") -> Self:
        """`data` as this config; BadInput names each wrong field (code `bad_<first field>`)."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as error:
            first = next((str(part) for part in error.errors()[0].get("loc", ())), "config")
            raise BadInput(describe_problems(error.errors(), where), f"bad_{first}") from None

    def notes(self) -> dict[str, dict[str, str]]:
        """How `prepare` read the config ({heading: {key: what became of it}}): kept in the task's
        result and log, not in its config. Most kinds have none."""
        return self._notes

    def with_notes(self, notes: dict[str, dict[str, str]]) -> Self:
        self._notes = notes
        return self


class StepwiseConfig(TaskConfig):
    """The config of a kind run step by step: the params each step starts from (set at creation) and
    those it was last asked with (kept by the runner); see `runner.step_params`."""

    step_defaults: dict[str, dict[str, Any]] | None = Field(
        None, description="step -> the params it starts from"
    )
    step_params: dict[str, dict[str, Any]] | None = Field(
        None, description="step -> the params it was asked with"
    )
