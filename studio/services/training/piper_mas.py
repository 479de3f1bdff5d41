"""Piper's monotonic alignment search core, built on the `monotonic-alignment-search` package.

piper-tts's wheel ships `piper/train/vits/monotonic_align/__init__.py`, which imports
`maximum_path_c` from a Cython extension the wheel does not contain (`.monotonic_align.core`), so
`python -m piper.train fit` cannot train as installed. This module is that missing core;
`install()` registers it under the name piper imports (the trainer's process, `piper_entry.py`,
calls it before piper.train is imported).

The PyPI package holds the same glow-tts/VITS search, but in the transposed layout ([b, text,
frames]; Piper's is [b, frames, text]), so values and paths are transposed on the way in and out.
Its core also lacks the guard Piper added for an item whose text is longer than its frames (the
backtrack would read before the first frame): such an item, which has no valid alignment anyway,
gets an even monotonic path (frame y -> token y * text // frames) instead of an out-of-bounds read.
"""

from __future__ import annotations

import sys
import types

import numpy as np
from monotonic_alignment_search.core import maximum_path_c as _mas_maximum_path_c

CORE_PACKAGE = "piper.train.vits.monotonic_align.monotonic_align"
CORE_MODULE = f"{CORE_PACKAGE}.core"


def maximum_path_c(paths: np.ndarray, values: np.ndarray, t_ys: np.ndarray, t_xs: np.ndarray) -> None:
    """Piper's `maximum_path_c`: fill `paths` in place with the most likely monotonic alignment.

    paths: int32 [b, frames, text] of zeros; values: float32 [b, frames, text] log-likelihoods
    (left as they are); t_ys / t_xs: int32 [b] frames / text tokens per item.
    """
    t_ys = np.asarray(t_ys, dtype=np.int32)
    t_xs = np.asarray(t_xs, dtype=np.int32)
    fits = t_xs <= t_ys
    items = np.flatnonzero(fits)
    if items.size:
        values_t = np.ascontiguousarray(values[items].transpose(0, 2, 1), dtype=np.float32)
        paths_t = np.zeros(values_t.shape, dtype=np.int32)
        _mas_maximum_path_c(
            paths_t, values_t, np.ascontiguousarray(t_xs[items]), np.ascontiguousarray(t_ys[items])
        )
        paths[items] = paths_t.transpose(0, 2, 1)
    for item in np.flatnonzero(~fits):
        frames, tokens = int(t_ys[item]), int(t_xs[item])
        paths[item] = 0
        if frames:
            frame = np.arange(frames)
            paths[item, frame, frame * tokens // frames] = 1


def install() -> None:
    """Make `piper.train.vits.monotonic_align` import this module as its missing Cython core."""
    package = types.ModuleType(CORE_PACKAGE)
    package.__path__ = []
    sys.modules.setdefault(CORE_PACKAGE, package)
    sys.modules.setdefault(CORE_MODULE, sys.modules[__name__])
