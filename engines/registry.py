"""Engine registry: every engine the studio knows, by name, loaded on first use.

The registry is the only place engines are constructed. It answers "what can run here and what is
missing" without loading anything, hands out loaded engines (by capability interface: `capable`),
and unloads the least recently used ones when memory runs low before another engine loads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

from engines.base import CAPABILITY_WORDS, INTERFACES, Capability, Engine, EngineUnavailable, VoiceInfo
from engines.gpu import GpuAllocator

Able = TypeVar("Able")  # one of the capability interfaces in engines.base


@dataclass(frozen=True)
class EngineReport:
    """What `/api/v1/engines` and the Engines tab show for one engine."""

    name: str
    display_name: str
    description: str
    capabilities: list[str]
    languages: list[str]
    license: str
    sample_rate: int
    state: str
    missing: list[str]
    problems: list[str]  # wrong with files placed for it; it runs without them
    voices: int
    device: str
    environment: str | None  # its own pinned environment (engines/envs/<name>.txt), if it has one
    environment_state: str | None  # ready, shared (the studio's satisfies it), stale or missing


class EngineRegistry:
    def __init__(self, weights_dir: Path, allocator: GpuAllocator, reserve_mb: int = 1024) -> None:
        self.weights_dir = weights_dir
        self.allocator = allocator
        self.reserve_mb = reserve_mb  # keep this much RAM free when loading another engine
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def add(self, engine: Engine) -> Engine:
        """Register `engine`; it must implement the interface of every capability it claims."""
        for capability in engine.info.capabilities:
            interface = INTERFACES.get(capability)
            if interface is not None and not isinstance(engine, interface):
                raise TypeError(f"{engine.info.name} claims {capability} but is no {interface.__name__}")
        self._engines[engine.info.name] = engine
        return engine

    def names(self) -> list[str]:
        return list(self._engines)

    def engine(self, name: str) -> Engine:
        """The engine called `name` (not loaded yet), spelt with hyphens or underscores in any case as
        clients and environments do (gpt-sovits, MOSS_TTSD); KeyError names the registered engines."""
        wanted = _spelling(name)
        for registered, engine in self._engines.items():
            if _spelling(registered) == wanted:
                return engine
        raise KeyError(f"unknown engine '{name}'; engines: {', '.join(self._engines)}")

    def loaded(self, name: str) -> Engine:
        """The engine, loaded (once, thread-safe), making room in memory first if needed."""
        engine = self.engine(name)
        if not engine.is_loaded:
            with self._lock:
                self._make_room(engine)
            engine.ensure_loaded()
        return engine

    def unload(self, name: str) -> None:
        self.engine(name).unload()

    def with_capability(self, capability: Capability) -> list[Engine]:
        return [e for e in self._engines.values() if capability in e.info.capabilities]

    def available(self, capability: Capability) -> list[Engine]:
        """Engines with the capability that can run here now."""
        return [e for e in self.with_capability(capability) if e.status().state.usable]

    def capable(self, interface: type[Able], name: str | None = None, load: bool = False) -> Able:
        """The engine that does what `interface` stands for (ScriptSpeaker, ClipCloner, StepTrainer,
        VideoMaker: see `engines.base.INTERFACES`): the one `name`d, else the first that can run
        here; loaded if `load`. KeyError: no engine by that name; EngineUnavailable: none that does
        it can run here (the message says what each one still needs)."""
        capability = next(c for c, i in INTERFACES.items() if i is interface)
        claiming = self.with_capability(capability)
        if name is not None:
            if name not in {e.info.name for e in claiming}:
                doing = ", ".join(e.info.name for e in claiming) or "none"
                raise KeyError(
                    f"no engine '{name}' here can {CAPABILITY_WORDS[capability]}; engines that can: {doing}"
                )
            claiming = [self.engine(name)]
        for engine in claiming:
            if engine.status().state.usable:
                return self.loaded(engine.info.name) if load else engine  # type: ignore[return-value]
        if not claiming:
            raise EngineUnavailable(f"no engine in this studio can {CAPABILITY_WORDS[capability]}")
        raise EngineUnavailable(
            "; ".join(f"{e.info.name} cannot run here: {'; '.join(e.status().missing)}" for e in claiming)
        )

    def voices(self) -> list[VoiceInfo]:
        """Built-in voices of every engine that can run here."""
        return [voice for engine in self.available(Capability.TTS) for voice in engine.voices()]

    def reports(self) -> list[EngineReport]:
        out = []
        for engine in self._engines.values():
            status = engine.status()
            info = engine.info
            environment = engine.environment()
            voices = engine.voices() if status.state.usable else []
            languages = list(info.languages)
            languages += sorted({voice.language for voice in voices} - set(languages))
            out.append(
                EngineReport(
                    name=info.name,
                    display_name=info.display_name,
                    description=info.description,
                    capabilities=sorted(c.value for c in info.capabilities),
                    languages=languages,
                    license=info.license,
                    sample_rate=info.sample_rate,
                    state=status.state.value,
                    missing=list(status.missing),
                    problems=list(engine.placed_problems()),
                    voices=len(voices),
                    device=engine.device,
                    environment=environment.name if environment else None,
                    environment_state=environment.state().value if environment else None,
                )
            )
        return out

    def any_loaded(self) -> bool:
        return any(e.is_loaded for e in self._engines.values())

    def _make_room(self, incoming: Engine) -> None:
        """Unload least recently used engines while free RAM is below what `incoming` needs."""
        needed_mb = incoming.info.memory_mb + self.reserve_mb
        loaded = sorted((e for e in self._engines.values() if e.is_loaded), key=lambda e: e.last_used)
        while loaded and psutil.virtual_memory().available / 2**20 < needed_mb:
            loaded.pop(0).unload()
        if psutil.virtual_memory().available / 2**20 < incoming.info.memory_mb:
            raise EngineUnavailable(
                f"{incoming.info.name}: not enough free memory to load it (needs ~{incoming.info.memory_mb} MB)"
            )


def _spelling(name: str) -> str:
    return name.strip().lower().replace("_", "-")
