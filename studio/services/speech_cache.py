"""Finished speech kept on disk by request, so a demo's repeated example text is made once."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CachedSpeech:
    data: bytes  # the encoded file, exactly as first sent
    duration: float
    sample_rate: int
    timing: dict[str, Any] = field(default_factory=dict)  # JSON: a captioned answer's words and cues


class SpeechCache:
    """Encoded speech files under `folder`, keyed by everything that decides their bytes (text, voice,
    settings, format, the engine's model and voice versions); at most `max_bytes`, the least
    recently used dropped first. `max_bytes` 0 turns it off."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @staticmethod
    def key(**fields: object) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str) -> CachedSpeech | None:
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = data_path.read_bytes()
        except (OSError, ValueError):
            return None
        os.utime(meta_path)  # recently used
        return CachedSpeech(data, float(meta["duration"]), int(meta["sample_rate"]), meta.get("timing", {}))

    def put(self, key: str, speech: CachedSpeech) -> None:
        if not self.enabled or len(speech.data) > self.max_bytes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        data_path, meta_path = self._paths(key)
        partial = data_path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        partial.write_bytes(speech.data)
        partial.replace(data_path)
        meta = {"duration": speech.duration, "sample_rate": speech.sample_rate, "timing": speech.timing}
        partial.write_text(json.dumps(meta), encoding="utf-8")
        partial.replace(meta_path)  # the entry counts once its meta is there: whole or absent
        self._evict()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.bin", self.folder / f"{key}.json"

    def _evict(self) -> None:
        with self._lock:
            entries = []
            for meta in self.folder.glob("*.json"):
                data = meta.with_suffix(".bin")
                try:
                    entries.append((meta.stat().st_mtime, meta, data, data.stat().st_size))
                except OSError:
                    continue
            total = sum(size for *_, size in entries)
            for _, meta, data, size in sorted(entries, key=lambda entry: entry[0]):
                if total <= self.max_bytes:
                    break
                meta.unlink(missing_ok=True)
                data.unlink(missing_ok=True)
                total -= size
