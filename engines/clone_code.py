"""Helpers for engines that run the user's clone of a model repository (MOSS-TTSD, MegaTTS3, GPT-SoVITS,
MultiTalk).

Such code is not installable from a registry: it sits under weights/, is put on `sys.path` only while
it is imported, and its modules must really come from that folder (not a same-named package).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType


@contextlib.contextmanager
def on_sys_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def cuda_scope(device: str) -> contextlib.AbstractContextManager[object]:
    """Make `device` the current CUDA device: these repositories' code often uses plain "cuda"."""
    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(device)


def from_folder(module: ModuleType, folder: Path) -> bool:
    """Whether `module` (or package, namespace packages included) was imported from under `folder`."""
    places = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []))]
    root = folder.resolve()
    return any(place and root in Path(place).resolve().parents for place in places)


def ffmpeg_on_path(bin_dir: Path) -> dict[str, str]:
    """PATH with an `ffmpeg` on it, for code that calls it by name: the system's, or imageio-ffmpeg's
    binary linked into `bin_dir`. Empty when there is already one on PATH."""
    if shutil.which("ffmpeg") is not None:
        return {}
    import imageio_ffmpeg

    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "ffmpeg"
    if not link.exists():  # absent, or left dangling by an environment since removed
        # Linked beside and renamed over: two processes (or a stale link) never make this fail.
        spare = bin_dir / f".ffmpeg-{os.getpid()}-{threading.get_ident()}"
        spare.unlink(missing_ok=True)
        spare.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        os.replace(spare, link)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
