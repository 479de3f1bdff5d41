"""Voice library: user voices made from reference clips, shared by every tab and route.

A library voice is a folder `<root>/<voice_id>/` holding the cleaned reference (`reference.wav`:
mono 24 kHz, silence trimmed, loudness normalised), optional engine artefacts (`style.npy`, a fitted
Kokoro style; `latent.npy`, a MegaTTS3 latent, with `latent_clip.<ext>`, the clip as sent, which
MegaTTS3 speaks it from) and a preview, plus a row in `voices.db` (SQLite)
with its name, description, tags, language, transcript, quality warnings and fit report. Uploads are
decoded and checked before anything is kept; ids and names from clients never become paths.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from engines.text import canonical_language
from studio import audio as audio_io
from studio.errors import BadInput, Conflict, NotFound, TooLarge, UnsupportedMedia
from studio.services.asr import Transcriber

RATE = 24000
ALLOWED_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a", ".ogg")
VOICE_ID = re.compile(r"^(?!upload(?![a-z0-9_-]))[a-z0-9][a-z0-9_-]{0,63}$")  # "upload" is a route
LATENT_CLIP = "latent_clip"  # a voice with a MegaTTS3 latent keeps the clip it was made from, as sent
MIN_SECONDS, MAX_SECONDS = 3.0, 60.0  # shorter: too little voice; longer: kept, trimmed to the first minute
DECODE_SECONDS = 300.0  # no more of a clip is decoded: a long upload never sits whole in memory
TARGET_RMS = 0.08


@dataclass
class VoiceRecord:
    id: str
    name: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    language: str = "en-us"
    engine: str = "kokoro"
    type: str = "library"
    transcript: str = ""
    duration: float = 0.0
    warnings: list[str] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)  # mode, similarity, baseline..., empty until fitted
    has_latent: bool = False
    created_at: float = 0.0

    @property
    def usable(self) -> bool:
        return bool(self.fit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"usable": self.usable}


@dataclass(frozen=True)
class CleanClip:
    audio: np.ndarray  # mono float32 at RATE
    warnings: list[str]


def shown_name(filename: str, limit: int = 60) -> str:
    """A client's file name as messages quote it: printable, and cut short when it is long."""
    name = "".join(c if c.isprintable() else "?" for c in filename)
    return name if len(name) <= limit else f"{name[: limit - 12]}...{name[-9:]}"


def as_stored(audio: np.ndarray) -> np.ndarray:
    """`audio` as a library voice's reference.wav holds it and reads back: 16-bit."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    stored, _ = sf.read(buffer, dtype="float32")
    return stored


def clean_reference(data: bytes, filename: str, max_bytes: int) -> CleanClip:
    """Validate and clean an uploaded reference clip; raises 413/415/422 with what to fix."""
    extension = Path(filename or "").suffix.lower()
    if extension not in ALLOWED_EXTENSIONS:
        shown = shown_name(extension, 20) if extension else "no extension"
        raise UnsupportedMedia(
            f"'{shown}' is not a supported audio file: use {', '.join(ALLOWED_EXTENSIONS)}"
        )
    if len(data) > max_bytes:
        raise TooLarge(f"the clip is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    try:
        audio, _ = audio_io.decode(data, RATE, max_seconds=DECODE_SECONDS)
    except audio_io.AudioError as error:
        raise UnsupportedMedia(f"{shown_name(filename)}: {error}") from None
    warnings = []
    if len(audio) >= int((DECODE_SECONDS - 0.1) * RATE):
        warnings.append(f"long: only the first {DECODE_SECONDS / 60:.0f} minutes of the file are read")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if np.mean(np.abs(audio) > 0.99) > 0.001:
        warnings.append("clipped: the recording is distorted in places; record a little quieter")
    trimmed = _trim_silence(audio)
    if trimmed.size == 0 or peak < 0.01:
        raise BadInput("no speech found in the clip: it is silent", "no_speech")
    duration = len(trimmed) / RATE
    if duration < MIN_SECONDS:
        raise BadInput(
            f"the clip has {duration:.1f} s of sound; give at least {MIN_SECONDS:.0f} s of speech",
            "too_short",
        )
    if duration > MAX_SECONDS:
        trimmed = trimmed[: int(MAX_SECONDS * RATE)]
        warnings.append(f"long: only the first {MAX_SECONDS:.0f} s are used")
    noise_db = _noise_floor_db(audio)
    if noise_db > -40:
        warnings.append(
            f"noisy: background at {noise_db:.0f} dBFS between words; a quieter room gives a closer voice"
        )
    rms = float(np.sqrt(np.mean(trimmed**2)))
    trimmed = audio_io.limit_peak(trimmed * (TARGET_RMS / max(rms, 1e-4)))
    return CleanClip(trimmed.astype(np.float32), warnings)


def _trim_silence(audio: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing silence (20 ms frames below threshold relative to the peak)."""
    frame = int(0.02 * RATE)
    if len(audio) < frame:
        return audio[:0]
    frames = len(audio) // frame
    energy = np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.nonzero(energy > max(energy.max(), 1e-6) * 10 ** (threshold_db / 20))[0]
    if loud.size == 0:
        return audio[:0]
    start, end = max(loud[0] - 5, 0) * frame, min(loud[-1] + 6, frames) * frame  # keep 100 ms around
    return audio[start:end]


def _noise_floor_db(audio: np.ndarray) -> float:
    """Level of the quietest tenth of 20 ms frames: the room, not the voice."""
    frame = int(0.02 * RATE)
    frames = len(audio) // frame
    if frames < 10:
        return -120.0
    energy = np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    return float(20 * np.log10(max(np.percentile(energy, 10), 1e-6)))


class VoiceLibrary:
    """User voices on disk + SQLite; looked up by every engine path that takes Kokoro voices."""

    def __init__(self, root: Path, transcriber: Transcriber, reserved_ids: set[str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.transcriber = transcriber
        self.reserved_ids = reserved_ids or set()
        self._lock = threading.Lock()
        self._styles: dict[str, np.ndarray] = {}
        self._db = sqlite3.connect(root / "voices.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS voices (id TEXT PRIMARY KEY, record TEXT NOT NULL)")

    # ---- records -----------------------------------------------------------------------------
    def add(
        self,
        voice_id: str,
        data: bytes,
        filename: str,
        max_bytes: int,
        name: str = "",
        description: str = "",
        tags: list[str] | None = None,
        latent: bytes | None = None,
        language: str | None = None,
    ) -> VoiceRecord:
        """A new library voice from an uploaded clip; its language is the uploader's (any spelling
        `canonical_language` takes) or, when None, the one heard in the clip."""
        voice_id = voice_id.strip().lower()
        try:
            language = canonical_language(language)
        except ValueError as error:
            raise BadInput(str(error), "bad_language") from None
        if not VOICE_ID.match(voice_id):
            raise BadInput(
                "voice_id must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit, and not 'upload'",
                "bad_voice_id",
            )
        if voice_id in self.reserved_ids:
            raise Conflict(f"'{voice_id}' is a built-in voice; choose another id", "voice_exists")
        if self.get(voice_id) is not None:
            raise Conflict(
                f"a voice '{voice_id}' exists already; delete it first or choose another id", "voice_exists"
            )
        if latent is not None:
            _check_latent(latent)  # before anything is kept (or transcribed)
        clip = clean_reference(data, filename, max_bytes)
        transcript = self.transcriber.transcribe(clip.audio, RATE, language)
        warnings = list(clip.warnings)
        if transcript.text and transcript.confidence < 0.35:
            warnings.append("unclear speech: the transcript is uncertain (music, noise or another language?)")
        if not transcript.text:
            warnings.append("no words recognised: is this speech?")
        folder = self.root / voice_id
        folder.mkdir(exist_ok=True)  # one left by a failed add holds nothing the library knows of
        sf.write(folder / "reference.wav", clip.audio, RATE, subtype="PCM_16")
        if latent is not None:  # with the clip as sent: the latent is of that audio, untrimmed
            (folder / "latent.npy").write_bytes(latent)
            (folder / f"{LATENT_CLIP}{Path(filename).suffix.lower()}").write_bytes(data)
        record = VoiceRecord(
            id=voice_id,
            name=(name or voice_id).strip()[:80],
            description=description.strip()[:500],
            tags=[t.strip()[:32] for t in (tags or []) if t.strip()][:10],
            language=transcript.language,
            transcript=transcript.text,
            duration=round(len(clip.audio) / RATE, 2),
            warnings=warnings,
            has_latent=latent is not None,
            created_at=time.time(),
        )
        self._write(record)
        return record

    def get(self, voice_id: str) -> VoiceRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM voices WHERE id = ?", (voice_id,)).fetchone()
        return VoiceRecord(**json.loads(row[0])) if row else None

    def require(self, voice_id: str) -> VoiceRecord:
        record = self.get(voice_id)
        if record is None:
            raise NotFound(f"no library voice '{voice_id}'", "voice_not_found")
        return record

    def list(self) -> list[VoiceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM voices ORDER BY id").fetchall()
        return [VoiceRecord(**json.loads(row[0])) for row in rows]

    def update(self, voice_id: str, **changes: Any) -> VoiceRecord:
        record = self.require(voice_id)
        for key in ("name", "description", "tags", "transcript", "language"):
            if key in changes and changes[key] is not None:
                setattr(record, key, changes[key])
        self._write(record)
        return record

    def delete(self, voice_id: str) -> None:
        self.require(voice_id)
        with self._lock:
            self._db.execute("DELETE FROM voices WHERE id = ?", (voice_id,))
            self._styles.pop(voice_id, None)
        shutil.rmtree(self.root / voice_id, ignore_errors=True)

    # ---- files -------------------------------------------------------------------------------
    def reference(self, voice_id: str) -> np.ndarray:
        self.require(voice_id)
        audio, _ = sf.read(self.root / voice_id / "reference.wav", dtype="float32")
        return audio

    def latent_reference(self, voice_id: str) -> tuple[Path, Path] | None:
        """(the clip as sent, its MegaTTS3 latent) of a library voice that carries a latent; else None."""
        folder = self.root / voice_id
        if not VOICE_ID.match(voice_id) or not (folder / "latent.npy").is_file():
            return None
        clips = sorted(folder.glob(f"{LATENT_CLIP}.*"))
        return (clips[0], folder / "latent.npy") if clips else None

    def save_style(self, voice_id: str, style: np.ndarray, fit: dict[str, Any]) -> VoiceRecord:
        record = self.require(voice_id)
        np.save(self.root / voice_id / "style.npy", style.astype(np.float32))
        with self._lock:
            self._styles[voice_id] = style.astype(np.float32)
        record.fit = fit
        self._write(record)
        return record

    def style(self, voice_id: str) -> np.ndarray | None:
        """The fitted Kokoro style of a library voice, or None (not a library voice, or not fitted yet)."""
        with self._lock:
            if voice_id in self._styles:
                return self._styles[voice_id]
        if not VOICE_ID.match(voice_id):
            return None
        path = self.root / voice_id / "style.npy"
        if not path.exists():
            return None
        style = np.load(path)
        with self._lock:
            self._styles[voice_id] = style
        return style

    def _write(self, record: VoiceRecord) -> None:
        with self._lock:
            self._db.execute(
                "REPLACE INTO voices (id, record) VALUES (?, ?)", (record.id, json.dumps(asdict(record)))
            )


def _check_latent(data: bytes) -> None:
    """A MegaTTS3 latent: a plain .npy array whose header matches the bytes sent (read from the
    header first, so a header claiming a huge array is refused without allocating it)."""
    import io

    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except Exception:
        raise UnsupportedMedia(
            "voice_latent is not a .npy array file: save the latent with numpy.save"
        ) from None
    if dtype.hasobject:
        raise UnsupportedMedia(
            "voice_latent holds Python objects (a pickle); a latent is an array of numbers"
        )
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(data) - stream.tell():
        raise UnsupportedMedia(
            f"voice_latent's header describes a {dtype} array of shape {shape} ({expected} bytes) but "
            f"{len(data) - stream.tell()} bytes follow it: save the latent again with numpy.save"
        )
    latent = np.load(io.BytesIO(data), allow_pickle=False)
    if latent.ndim not in (2, 3) or latent.size == 0:
        raise BadInput(f"voice_latent has shape {latent.shape}; expected a MegaTTS3 latent [1, frames, 32]")
