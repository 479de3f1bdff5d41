"""The studio's parts, built once from Settings and shared by the REST API and the UI."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engines.cluster import RayCluster
from engines.gpt_sovits import GptSovitsEngine
from engines.gpu import GpuAllocator
from engines.kokoro_onnx import KokoroOnnxEngine
from engines.kokoro_torch import KokoroTorchEngine
from engines.megatts3 import MegaTts3Engine
from engines.moss_ttsd import MossTtsdEngine
from engines.multitalk import MultiTalkEngine
from engines.piper import PiperEngine
from engines.registry import EngineRegistry
from studio import __version__
from studio.config import Settings
from studio.services.admission import Admission
from studio.services.asr import Transcriber
from studio.services.audiobook import AudiobookService
from studio.services.cloning import CloningService
from studio.services.dialogue import DialogueService
from studio.services.distributed import DistributedService
from studio.services.environments import EnvironmentService
from studio.services.gallery import VoiceGallery
from studio.services.pronunciation import Lexicon
from studio.services.speech import OPENAI_VOICES, SpeechService
from studio.services.speech_cache import SpeechCache
from studio.services.training.service import TrainingService
from studio.services.video import VideoService
from studio.services.voice_fit import fit_modes
from studio.services.voices import VoiceLibrary
from studio.tasks.runner import TaskRunner
from studio.tasks.store import TaskStore


def cuda_possible() -> bool:
    """False where no CUDA device can be visible: Linux with no NVIDIA device node (nor WSL's
    /dev/dxg). There the allocator need not import torch (~150 MB resident for the life of the
    process) just to find no GPU; elsewhere it probes as usual."""
    if not sys.platform.startswith("linux"):
        return True
    dev = Path("/dev")
    return (dev / "nvidiactl").exists() or (dev / "dxg").exists() or any(dev.glob("nvidia[0-9]*"))


CLUSTER_ENGINES = ("kokoro", "piper")  # engines a Ray cluster's nodes can run so far


class Studio:
    """Settings, GPU allocator, engine registry, task store/runner and services, wired together."""

    version = __version__

    def __init__(self, settings: Settings, allocator: GpuAllocator | None = None) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.allocator = allocator or GpuAllocator(None if cuda_possible() else [])
        self.cluster = cluster_for(settings)
        # Kokoro asks the cloning service for voices beyond its packs (bound late: built below).
        # MegaTTS3 asks the library for voices with a latent (bound late too).
        self.registry = build_registry(
            settings,
            self.allocator,
            lambda voice: self.cloning.style_for(voice),
            lambda voice: self.library.latent_reference(voice),
            self.cluster,
        )
        self.store = TaskStore(settings.tasks_dir)
        self.runner = TaskRunner(
            self.store,
            self.allocator,
            workers=settings.task_workers,
            short_lane_workers=settings.short_task_workers,
        )
        self.transcriber = Transcriber(settings.onnx_threads, settings.cache_dir / "whisper")
        self.speech = SpeechService(
            self.registry,
            settings.max_text_chars,
            lambda: [record.id for record in self.library.list()],
            Admission(settings.max_queue_seconds),
            SpeechCache(settings.cache_dir / "speech", settings.speech_cache_mb * 2**20),
            lambda: [
                {"id": r.id, "name": r.name or r.id, "engine": r.engine, "language": r.language}
                for r in self.library.list()
                if r.usable
            ],
        )
        self.speech.transcriber = self.transcriber  # the quality gate of speech and dialogue tasks
        self.pronunciations = Lexicon(settings.data_dir / "pronunciations.db")
        self.speech.lexicon = self.pronunciations  # every speech path says the lexicon's words its way
        builtin_ids = {v.id for v in self.registry.voices()} | set(OPENAI_VOICES)
        self.library = VoiceLibrary(settings.data_dir / "voices", self.transcriber, builtin_ids)
        self.cloning = CloningService(
            self.library,
            self.speech,
            self.transcriber,
            settings.cache_dir,
            settings.max_upload_bytes,
            settings.allow_thorough_fit,
            fit_modes(settings.fit_quick_trials),
        )
        self.dialogue = DialogueService(
            self.speech, settings.max_dialogue_chars, settings.max_dialogue_turns, self.cloning.reference_clip
        )
        self.training = TrainingService(
            self.speech,
            self.library,
            self.cloning,
            self.transcriber,
            self.registry,
            settings.data_dir / "piper_voices",
            settings.max_upload_bytes,
            self.runner,
        )
        self.video = VideoService(
            self.dialogue, self.registry, settings.data_dir / "uploads" / "video", self.runner
        )
        self.environments = EnvironmentService(self.registry, self.runner)
        self.gallery = VoiceGallery(self.registry, self.speech, settings.cache_dir / "previews")
        self.audiobook = AudiobookService(
            self.speech,
            self.transcriber,
            self.runner,
            settings.data_dir / "uploads" / "books",
            settings.max_upload_bytes,
        )
        for kind in (
            self.environments.task_kind(),
            self.speech.task_kind(),
            self.dialogue.task_kind(),
            self.cloning.task_kind(),
            self.training.task_kind(),
            DistributedService(self.allocator).task_kind(),
            self.video.task_kind(),
            self.audiobook.task_kind(),
        ):
            self.runner.register(kind)

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()
        for name in self.registry.names():  # engine workers exit now, their memory freed at once
            self.registry.unload(name)
        if self.cluster:
            self.cluster.disconnect()


def cluster_for(settings: Settings) -> RayCluster | None:
    """The Ray cluster `STUDIO_RAY_ADDRESS` names, connected; None when it names none."""
    if not settings.ray_address:
        return None
    unknown = set(settings.ray_engines) - set(CLUSTER_ENGINES)
    if unknown:
        raise ValueError(
            f"STUDIO_RAY_ENGINES names {', '.join(sorted(unknown))}: engines that can run on a cluster are "
            + ", ".join(CLUSTER_ENGINES)
        )
    cluster = RayCluster(settings.ray_address, settings.ray_resources, settings.ray_replicas)
    cluster.connect()
    return cluster


def build_registry(
    settings: Settings,
    allocator: GpuAllocator,
    extra_styles: Callable[[str], np.ndarray | None] | None = None,
    latent_references: Callable[[str], tuple[Path, Path] | None] | None = None,
    cluster: RayCluster | None = None,
) -> EngineRegistry:
    """Every engine the studio knows; the embedded ones first (they are the defaults). With a
    cluster, the engines `ray_engines` names make their speech on its nodes."""
    weights = settings.weights_dir
    registry = EngineRegistry(weights, allocator)
    threads = settings.onnx_threads or os.cpu_count() or 1
    kokoro_cache = settings.cache_dir / "kokoro"
    piper_voices = (settings.data_dir / "piper_voices",)
    # What a node builds its own copy with (its own cores; the same weights and voices folders).
    on_nodes = {
        "kokoro": {"weights_dir": weights, "cache_dir": kokoro_cache},
        "piper": {"weights_dir": weights, "extra_voice_dirs": piper_voices},
    }
    for engine in (
        KokoroOnnxEngine(weights, allocator, kokoro_cache, threads, extra_styles),
        PiperEngine(weights, allocator, piper_voices, threads),
    ):
        name = engine.info.name
        registry.add(
            cluster.dispatch(engine, **on_nodes[name]) if cluster and name in settings.ray_engines else engine
        )
    registry.add(KokoroTorchEngine(weights, allocator))
    registry.add(MossTtsdEngine(weights, allocator))
    registry.add(MegaTts3Engine(weights, allocator, latent_references))
    registry.add(MultiTalkEngine(weights, allocator))
    registry.add(GptSovitsEngine(weights, allocator, settings.data_dir / "gpt_sovits_voices"))
    return registry
