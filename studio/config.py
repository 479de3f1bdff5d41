"""Settings: environment variables (`STUDIO_*`) over an optional YAML file over defaults.

The YAML file is `STUDIO_CONFIG` if set, else `studio.yaml` in the working folder if present; its
keys are the field names below (e.g. `api_keys: [k1, k2]`, `rate_limit_per_minute: 60`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDIO_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 7860
    data_dir: Path = Path("data")  # task store, task outputs, engine caches
    weights_dir: Path = Path("weights")  # user-provided heavy weights
    api_keys: CommaList = Field(default_factory=list)  # empty: REST open
    ui_users: CommaList = Field(default_factory=list)  # "user:password" pairs; empty: no login
    rate_limit_per_minute: int = 30  # per client, on synthesis routes; 0 disables
    rate_limit_burst: int = 10
    max_text_chars: int = 20_000
    max_dialogue_chars: int = 0  # a dialogue script's length; 0: 10 x max_text_chars
    max_dialogue_turns: int = 0  # turns in a dialogue script; 0: no limit
    allow_thorough_fit: bool = True  # thorough voice fitting (minutes of CPU per voice)
    # Trials of a quick fit's search (each speaks and measures the probe once): fewer finish sooner on
    # a small host, at some likeness.
    fit_quick_trials: int = Field(14, ge=1, le=200)
    max_upload_mb: int = 50
    task_workers: int = 1  # long jobs that run at once
    short_task_workers: int = (
        1  # extra workers only for short jobs (a few sentences), so they never wait behind long ones
    )
    max_wait_seconds: float = 300.0  # a request with "wait": true answers 202 with the task after this long
    onnx_threads: int = 0  # 0: one per core
    # A speech request is refused (503 busy, Retry-After) when its engine has more than this many
    # seconds of speech queued ahead of it; 0: never refused, it waits.
    max_queue_seconds: float = 20.0
    speech_cache_mb: int = 200  # finished speech kept for identical requests; 0: no cache
    cors_origins: CommaList = Field(default_factory=list)
    space_note: str = ""  # Markdown shown at the top of the UI (the Hugging Face Space preset fills it)
    # Wyoming protocol server for Home Assistant beside the web studio, e.g. "tcp://0.0.0.0:10200"; empty: off
    wyoming_uri: str = ""
    # A Ray cluster ("HOST:6379" or "ray://HOST:10001") whose nodes make the speech of `ray_engines`;
    # empty: everything runs in this process and its workers.
    ray_address: str = ""
    ray_engines: CommaList = Field(default_factory=lambda: ["kokoro", "piper"])
    # Custom Ray resources an engine's hosts (or "voice-fit": the fits) need beyond one CPU, e.g.
    # {"kokoro": {"speech": 1}, "voice-fit": {"speech": 1}}.
    ray_resources: dict[str, dict[str, float]] = Field(default_factory=dict)
    ray_replicas: int = 1  # hosts per engine on the cluster: sentences made at once

    @field_validator("api_keys", "ui_users", "cors_origins", "ray_engines", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # Env vars give "a,b"; YAML gives a list.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 2**20

    @property
    def tasks_dir(self) -> Path:
        return self.data_dir / "tasks"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


class _YamlSource(PydanticBaseSettingsSource):
    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("STUDIO_CONFIG", "studio.yaml"))
        if not path.is_file():
            if "STUDIO_CONFIG" in os.environ:
                raise FileNotFoundError(f"STUDIO_CONFIG points to {path}, which does not exist")
            return {}
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of setting names to values")
        return values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False
