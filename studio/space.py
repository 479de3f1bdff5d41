"""Hugging Face Space support: detection, the shared-use preset, and ZeroGPU durations.

On a Space (`SPACE_ID` set by the Space runtime, or `SYSTEM=spaces`) `app.py` applies
`space_settings`: bind 0.0.0.0 on the Space's port, keep data in the persistent `/data` volume
when one is attached (else a temporary folder), and cap what one request may ask for, since
strangers share the machine. Settings given explicitly (STUDIO_* environment variables,
studio.yaml, command-line flags) win over the preset.

ZeroGPU: `on_zero_gpu` wraps a GPU function with `spaces.GPU(duration=...)` when the `spaces`
package is importable (it is on Spaces; it is no dependency of the studio), with a duration
derived from the request by `gpu_duration`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from studio.config import Settings

log = logging.getLogger(__name__)

PERSISTENT_ROOT = Path("/data")  # where a Space's persistent storage is mounted
DEFAULT_PORT = 7860

# What the preset sets unless the setting was given explicitly.
SPACE_LIMITS: dict[str, Any] = {
    "max_text_chars": 2_000,  # one speech request
    "max_dialogue_chars": 6_000,  # one dialogue script
    "max_dialogue_turns": 40,
    "allow_thorough_fit": False,  # minutes of shared CPU per voice: quick fits only
}

# kind -> (seconds to load and warm up, seconds per character of text); clamped to GPU_DURATION_RANGE.
GPU_COST: dict[str, tuple[float, float]] = {
    "dialogue": (40.0, 0.05),  # MOSS-TTSD: the whole script in one pass
    "clone": (20.0, 0.03),  # MegaTTS3: one text in the voice of a clip
}
GPU_DURATION_RANGE = (15, 300)

F = TypeVar("F", bound=Callable[..., Any])


def running_on_space() -> bool:
    """True inside a Hugging Face Space (the runtime sets SPACE_ID, and SYSTEM=spaces)."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("SYSTEM") == "spaces"


def space_settings(settings: Settings, persistent_root: Path = PERSISTENT_ROOT) -> Settings:
    """`settings` with the Space preset applied to every setting that was not given explicitly."""
    explicit = settings.model_fields_set
    port = os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT
    data_dir, persistent = space_data_dir(persistent_root)
    preset: dict[str, Any] = {"host": "0.0.0.0", "port": int(port), "data_dir": data_dir, **SPACE_LIMITS}
    updated = settings.model_copy(update={k: v for k, v in preset.items() if k not in explicit})
    if "data_dir" in explicit:
        persistent = _is_within(updated.data_dir, persistent_root)
    where = "persistent storage" if persistent else "temporary: no persistent storage, lost on restart"
    log.info("Hugging Face Space preset: data in %s (%s)", updated.data_dir, where)
    if "space_note" not in explicit:
        updated = updated.model_copy(update={"space_note": space_note(updated, persistent)})
    return updated


def space_data_dir(persistent_root: Path = PERSISTENT_ROOT) -> tuple[Path, bool]:
    """(folder, persistent): `<root>/studio` when the Space has writable persistent storage, else a temp folder."""
    if persistent_root.is_dir() and os.access(persistent_root, os.W_OK | os.X_OK):
        return persistent_root / "studio", True
    return Path(tempfile.gettempdir()) / "speech-studio", False


def space_note(settings: Settings, persistent: bool) -> str:
    """The short note the UI shows at the top on a Space: its limits, and whether files persist."""
    dialogue_chars = settings.max_dialogue_chars or settings.max_text_chars * 10
    turns = f"{settings.max_dialogue_turns} turns / " if settings.max_dialogue_turns else ""
    fitting = (
        "thorough voice fitting is available"
        if settings.allow_thorough_fit
        else "quick voice fitting only (no thorough fitting)"
    )
    storage = (
        "files are kept in the Space's persistent storage"
        if persistent
        else "storage is temporary: voices and results are lost when the Space restarts"
    )
    return (
        f"**Shared Space:** speech up to {settings.max_text_chars:,} characters per request; "
        f"dialogue scripts up to {turns}{dialogue_chars:,} characters; {fitting}; {storage}. "
        "Run it on your own machine for longer work."
    )


def gpu_duration(kind: str, size: int) -> int:
    """Seconds of GPU to ask ZeroGPU for: a fixed start-up cost plus a cost per character of text."""
    if kind not in GPU_COST:
        raise ValueError(f"unknown GPU job kind '{kind}'; known: {', '.join(GPU_COST)}")
    base, per_char = GPU_COST[kind]
    low, high = GPU_DURATION_RANGE
    return max(low, min(high, math.ceil(base + per_char * max(size, 0))))


def on_zero_gpu(duration_fn: Callable[..., int]) -> Callable[[F], F]:
    """Decorator: `spaces.GPU(duration=duration_fn)` where `spaces` imports, else the function unchanged.

    `duration_fn` is called with the wrapped function's arguments and returns seconds (ZeroGPU's
    dynamic duration). Off a Space, and on Spaces without ZeroGPU, `spaces.GPU` has no effect.
    """

    def decorate(fn: F) -> F:
        try:
            import spaces  # type: ignore[import-not-found]  # only on Hugging Face Spaces
        except ImportError:
            return fn
        return spaces.GPU(duration=duration_fn)(fn)  # type: ignore[no-any-return]

    return decorate


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
