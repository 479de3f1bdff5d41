"""The studio's parts, built once from Settings and shared by the REST API and the UI."""

from __future__ import annotations

import os

from engines.gpu import GpuAllocator
from engines.kokoro_onnx import KokoroOnnxEngine
from engines.kokoro_torch import KokoroTorchEngine
from engines.moss_ttsd import MossTtsdEngine
from engines.piper import PiperEngine
from engines.registry import EngineRegistry
from studio import __version__
from studio.config import Settings
from studio.services.dialogue import DialogueService
from studio.services.speech import SpeechService
from studio.tasks.runner import TaskRunner
from studio.tasks.store import TaskStore


class Studio:
    """Settings, GPU allocator, engine registry, task store/runner and services, wired together."""

    version = __version__

    def __init__(self, settings: Settings, allocator: GpuAllocator | None = None) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.allocator = allocator or GpuAllocator()
        self.registry = build_registry(settings, self.allocator)
        self.store = TaskStore(settings.tasks_dir)
        self.runner = TaskRunner(self.store, self.allocator, workers=settings.task_workers)
        self.speech = SpeechService(self.registry, settings.max_text_chars)
        self.dialogue = DialogueService(self.speech)
        self.runner.register(self.speech.task_kind())
        self.runner.register(self.dialogue.task_kind())

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()


def build_registry(settings: Settings, allocator: GpuAllocator) -> EngineRegistry:
    """Every engine the studio knows; the embedded ones first (they are the defaults)."""
    weights = settings.weights_dir
    registry = EngineRegistry(weights, allocator)
    threads = settings.onnx_threads or os.cpu_count() or 1
    registry.add(
        KokoroOnnxEngine(weights, allocator, cache_dir=settings.cache_dir / "kokoro", threads=threads)
    )
    registry.add(PiperEngine(weights, allocator, extra_voice_dirs=(settings.data_dir / "piper_voices",)))
    registry.add(KokoroTorchEngine(weights, allocator))
    registry.add(MossTtsdEngine(weights, allocator))
    return registry
