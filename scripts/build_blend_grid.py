"""Rebuild assets/kokoro_blend_grid.npz: the speaker embeddings of Kokoro's grid blends (voice fitting's start).

Run after a change of the Kokoro model, its packs, GRID_SENTENCE or the speaker encoder:
    PYTHONPATH=. .venv/bin/python scripts/build_blend_grid.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engines.gpu import GpuAllocator
from engines.kokoro_onnx import KokoroOnnxEngine
from studio.services.asr import Transcriber
from studio.services.speaker import SpeakerEncoder
from studio.services.voice_fit import GRID_FILE, VoiceFitter

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kokoro = KokoroOnnxEngine(Path("weights"), GpuAllocator([]), cache_dir=Path("data/cache/kokoro"))
    grid = VoiceFitter(kokoro, SpeakerEncoder(), Transcriber()).build_grid()
    np.savez_compressed(
        GRID_FILE, names=np.array(list(grid)), embeddings=np.array(list(grid.values()), np.float32)
    )
    print(f"wrote {len(grid)} embeddings to {GRID_FILE}")
