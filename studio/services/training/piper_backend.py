"""Piper VITS training for the training wizard: check first, train as a resumable subprocess, export.

The dataset comes from the dataset steps (`dataset/metadata.csv` with `<id>|<text>` lines and
`dataset/wavs/<id>.wav`). Training is piper-tts's own Lightning trainer (`piper.train fit`), run by
`piper_entry.py` as a child process in its own process group with this environment's python, so a
cancel, a crash or an out-of-memory kill never takes the server with it and can always be stopped
whole. Everything the trainer writes that the user keeps lives in `train/` (served):
`train/checkpoints/` (`last.ckpt`, and `step=N.ckpt` for the full preset), `train/loss.json` (the
live loss curve), `train/config.json` (the voice config Piper writes) and `train/logs/` (Lightning's
CSV metrics). Its cache (phonemes, trimmed audio, spectrograms) and run config go to `_work/`.

Steps are Lightning's `global_step`: Piper optimizes the generator and the discriminator once each
per batch, so one batch is two steps (`max_steps` 8 = 4 batches).

A run continues from `train/checkpoints/last.ckpt` whenever one exists (after a cancel, a crash or a
server restart), losing only the steps since that checkpoint; a trainer a dead server left running
is found by its pid file and stopped first. Fine-tuning starts from a Piper checkpoint the user put
under `weights/` with Piper's `warmstart_ckpt` (all weights of the same shape, a fresh optimizer,
step 0), in that checkpoint's own architecture.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import soundfile as sf
import yaml

from engines.gpu import GpuDevice, Lease
from engines.piper import JOE_FULL_NAME, JOE_ID
from engines.supervisor import SupervisedProcess, stop_orphans
from studio.errors import BadInput
from studio.services.training.common import StepReport, Workspace
from studio.tasks.runner import TaskCancelled, TaskFailed

EVENT_PREFIX = "@studio-train "  # piper_entry's machine-readable lines start with this
ENTRY_MODULE = "studio.services.training.piper_entry"
ROOT = Path(__file__).resolve().parents[3]  # the repository: the child imports `studio` from here
SAMPLE_RATE = 22050  # the dataset's rate, and Piper's "medium" voices'
PID_FILE = "piper_trainer.pid"  # in _work/: the running child's process tree, for restart recovery
FIT_CONFIG = "piper_fit.yaml"
STOP_GRACE_SECONDS = 10.0  # SIGTERM lets Lightning stop between steps; SIGKILL after this
POLL_SECONDS = 0.25  # how often a running child is checked for a cancel
STEP_LOG_SECONDS = 15.0  # a step line goes to the task log at most this often
LOSS_WRITE_SECONDS = 2.0  # loss.json is rewritten at most this often while training
TAIL_LINES = 80  # output kept to explain a failure
VOICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RESERVED_VOICES = frozenset({JOE_ID, JOE_FULL_NAME.lower()})
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
# VitsModel arguments that fix the shape of a checkpoint's weights: a resume or a fine-tune must
# build its model with the checkpoint's own values (from its hyper_parameters).
ARCHITECTURE = (
    "sample_rate",
    "num_speakers",
    "resblock",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "upsample_rates",
    "upsample_initial_channel",
    "upsample_kernel_sizes",
    "filter_length",
    "hop_length",
    "win_length",
    "mel_channels",
    "mel_fmin",
    "mel_fmax",
    "inter_channels",
    "hidden_channels",
    "filter_channels",
    "n_heads",
    "n_layers",
    "kernel_size",
    "p_dropout",
    "n_layers_q",
    "use_spectral_norm",
    "gin_channels",
    "use_sdp",
    "segment_size",
    "use_mrd",
)
# GPU memory per device (estimates, not measured here: Piper's notes say batch 32 fits 24 GB in
# fp32 and users train with 8 GB at small batches): a base for weights, optimizer and CUDA context,
# then activations per clip of the batch.
VRAM_BASE_MB = 2500
VRAM_PER_CLIP_MB = {"32-true": 650, "16-mixed": 400, "bf16-mixed": 400}
MIB = 2**20


@dataclass(frozen=True)
class Preset:
    """One way to train: where (CPU or GPU), how big, how long, and what it needs."""

    name: str
    gpu: bool
    batch_size: int
    precision: str
    max_steps: int
    checkpoint_every: int
    keep_checkpoints: int  # step=N.ckpt files kept besides last.ckpt
    num_workers: int
    model: dict[str, Any] = field(default_factory=dict)  # VitsModel arguments over Piper's "medium"
    # A checkpoint holds the weights and both Adam moments: 12 bytes a parameter (tiny 47.3 M
    # parameters, 542 MiB measured; Piper's medium 70.4 M, ~806 MiB). The discriminator (46.7 M)
    # has a fixed size, so even the tiny model's checkpoints are half a gigabyte.
    checkpoint_mb: int = 0
    ram_mb: int = 0  # host memory the trainer needs
    min_clips: int = 1
    min_minutes: float = 0.0
    description: str = ""


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        gpu=False,
        batch_size=2,
        precision="32-true",
        max_steps=8,
        checkpoint_every=4,
        keep_checkpoints=0,
        num_workers=0,
        model={
            "hidden_channels": 32,
            "inter_channels": 32,
            "filter_channels": 64,
            "n_layers": 2,
            "upsample_initial_channel": 32,
            "segment_size": 2048,  # 8 frames per training slice: the discriminators' work halves
        },
        checkpoint_mb=545,
        ram_mb=3500,  # the trainer's peak RSS was 2.8 GB (it holds a checkpoint in memory to write it)
        min_clips=8,
        description="a few steps of a tiny model on the CPU: checks the whole path in a minute or two; "
        "the voice it makes is noise, not words",
    ),
    "full": Preset(
        name="full",
        gpu=True,
        batch_size=32,
        precision="bf16-mixed",
        max_steps=20000,
        checkpoint_every=1000,
        keep_checkpoints=2,
        num_workers=4,
        checkpoint_mb=810,
        ram_mb=6000,  # an estimate (not measured here): the trainer, 4 loader workers, a checkpoint in memory
        min_clips=50,
        min_minutes=5.0,
        description="Piper's medium architecture on CUDA GPUs (DDP across several), mixed precision",
    ),
}


@dataclass(frozen=True)
class TrainSettings:
    """A training run's parameters: the preset's values with the user's overrides, checked."""

    preset: Preset
    voice_name: str
    espeak_voice: str
    batch_size: int
    precision: str
    max_steps: int
    checkpoint_every: int
    keep_checkpoints: int
    num_workers: int
    devices: int
    strategy: str | None
    base_checkpoint: str | None
    disk_factor: float  # free disk needed per byte of dataset audio (Piper's cache is ~6x the wavs)
    ram_mb: int


@dataclass(frozen=True)
class DatasetSummary:
    """What the dataset holds: usable clips, seconds of speech, bytes of wav."""

    clips: int
    seconds: float
    bytes: int


# ---- parameters -------------------------------------------------------------------------------------
def _number(params: dict[str, Any], key: str, default: float, low: float, high: float, integer: bool) -> Any:
    value = params.get(key, default)
    if value is None:
        value = default
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{key} must be {kind} from {low:g} to {high:g}; got {value!r}", "bad_training_param")
    if integer and int(value) != value:
        raise BadInput(f"{key} must be {kind} from {low:g} to {high:g}; got {value!r}", "bad_training_param")
    if not low <= value <= high:
        raise BadInput(f"{key} must be from {low:g} to {high:g}; got {value:g}", "bad_training_param")
    return int(value) if integer else float(value)


@functools.cache
def _espeak_voices() -> frozenset[str]:
    """The espeak-ng voice names piper-tts ships data for (lower case), e.g. `en-us`."""
    spec = importlib.util.find_spec("piper")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    lang = Path(next(iter(spec.submodule_search_locations))) / "espeak-ng-data" / "lang"
    return frozenset(path.name.lower() for path in lang.rglob("*") if path.is_file())


def check_voice_name(name: object) -> str:
    """A voice id for Piper's voices folder: lowercase letters, digits, `_` and `-`; not Joe's."""
    if not isinstance(name, str) or not VOICE_NAME.match(name):
        raise BadInput(
            "voice_name must be 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit "
            f"(it becomes the voice id and the file name); got {name!r}",
            "bad_voice_name",
        )
    if name in RESERVED_VOICES:
        raise BadInput(f"voice_name '{name}' is the bundled Joe voice: choose another name", "bad_voice_name")
    return name


def settings(params: dict[str, Any]) -> TrainSettings:
    """The run's settings from the task's parameters; BadInput names the parameter and what to change."""
    preset_name = params.get("preset", "tiny")
    if preset_name not in PRESETS:
        raise BadInput(
            f"preset must be one of {', '.join(PRESETS)}; got {preset_name!r}", "bad_training_param"
        )
    preset = PRESETS[preset_name]
    voice_name = check_voice_name(params.get("voice_name", "voice"))
    espeak_voice = params.get("espeak_voice", "en-us")
    if not isinstance(espeak_voice, str) or espeak_voice.lower() not in _espeak_voices():
        raise BadInput(
            f"espeak_voice {espeak_voice!r} is not an espeak-ng voice piper-tts has data for (e.g. en-us, en-gb, de)",
            "bad_training_param",
        )
    precision = params.get("precision", preset.precision)
    if precision not in PRECISIONS:
        raise BadInput(
            f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}", "bad_training_param"
        )
    max_steps = _number(params, "max_steps", preset.max_steps, 2, 10_000_000, True)
    strategy = params.get("strategy")
    if strategy is not None and (not isinstance(strategy, str) or not strategy.startswith(("auto", "ddp"))):
        raise BadInput(f"strategy must be auto or a ddp strategy; got {strategy!r}", "bad_training_param")
    base = params.get("base_checkpoint") or None
    if base is not None and not isinstance(base, str):
        raise BadInput("base_checkpoint must be a path under weights/ (a string)", "bad_training_param")
    return TrainSettings(
        preset=preset,
        voice_name=voice_name,
        espeak_voice=espeak_voice.lower(),
        batch_size=_number(params, "batch_size", preset.batch_size, 1, 1024, True),
        precision=precision,
        max_steps=max_steps,
        checkpoint_every=_number(params, "checkpoint_every", preset.checkpoint_every, 1, max_steps, True),
        keep_checkpoints=_number(params, "keep_checkpoints", preset.keep_checkpoints, 0, 100, True),
        num_workers=_number(params, "num_workers", preset.num_workers, 0, 64, True),
        devices=_number(params, "devices", 1, 1, 64, True) if preset.gpu else 1,
        strategy=strategy,
        base_checkpoint=base,
        disk_factor=_number(params, "disk_factor", 8.0, 0.0, 1e12, False),
        ram_mb=_number(params, "ram_mb", preset.ram_mb, 0, 1e9, True),
    )


def base_checkpoint_path(raw: str, weights_dir: Path | None) -> Path:
    """The user's Piper checkpoint, which must be a `.ckpt` file inside `weights_dir`."""
    if weights_dir is None:
        raise BadInput("base_checkpoint needs the weights folder to look in", "bad_base_checkpoint")
    root = weights_dir.resolve()
    path = Path(raw)
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_relative_to(root):
        raise BadInput(f"base_checkpoint must be inside {weights_dir}; got {raw}", "bad_base_checkpoint")
    if path.suffix != ".ckpt" or not path.is_file():
        raise BadInput(
            f"base_checkpoint {raw} is not a .ckpt file in {weights_dir}: put a Piper checkpoint there "
            "(a medium-quality one from huggingface.co/datasets/rhasspy/piper-checkpoints fits the full preset)",
            "bad_base_checkpoint",
        )
    return path


# ---- paths --------------------------------------------------------------------------------------------
def train_dir(ws: Workspace) -> Path:
    return ws.root / "train"


def checkpoints_dir(ws: Workspace) -> Path:
    return train_dir(ws) / "checkpoints"


def loss_file(ws: Workspace) -> Path:
    return train_dir(ws) / "loss.json"


def _step_of(path: Path) -> int:
    match = re.fullmatch(r"step=(\d+)\.ckpt", path.name)
    return int(match.group(1)) if match else -1


def latest_checkpoint(ws: Workspace) -> Path | None:
    """`last.ckpt`, else the newest `step=N.ckpt`; a file cut short (not a whole zip) is passed over."""
    folder = checkpoints_dir(ws)
    candidates = [folder / "last.ckpt", *sorted(folder.glob("step=*.ckpt"), key=_step_of, reverse=True)]
    return next((path for path in candidates if path.is_file() and zipfile.is_zipfile(path)), None)


def checkpoint_info(path: Path) -> tuple[int, dict[str, Any]]:
    """A Piper (Lightning) checkpoint's global step and hyper-parameters, read lazily (mmap)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:
        raise TaskFailed(f"cannot read the checkpoint {path}: {error}") from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise TaskFailed(f"{path} is not a Lightning checkpoint of a Piper voice (it has no state_dict)")
    return int(data.get("global_step", 0)), dict(data.get("hyper_parameters") or {})


# ---- checks -------------------------------------------------------------------------------------------
def inspect_dataset(ws: Workspace, preset: Preset) -> tuple[DatasetSummary, list[str]]:
    """Count the dataset's clips and speech, and say what is wrong with it for `preset`."""
    csv_path = ws.dataset / "metadata.csv"
    empty = DatasetSummary(0, 0.0, 0)
    if not csv_path.is_file():
        return empty, [f"there is no dataset yet ({csv_path} is missing): run the dataset steps first"]
    bad_lines, missing, unreadable = [], [], []
    clips, seconds, size = 0, 0.0, 0
    with csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(enumerate(csv.reader(handle, delimiter="|"), start=1))  # as piper.train reads it
    for number, row in rows:
        if not row:
            continue
        clip_id, text = row[0], "|".join(row[1:])
        if not clip_id.strip() or not text.strip() or "/" in clip_id:
            bad_lines.append(number)
            continue
        # piper.train takes the first column as a file name, or as a name without ".wav"
        wav = ws.dataset / "wavs" / clip_id
        if not wav.is_file():
            wav = wav.with_name(f"{clip_id}.wav")
        if not wav.is_file():
            missing.append(clip_id)
            continue
        try:
            info = sf.info(str(wav))
        except RuntimeError:
            unreadable.append(wav.name)
            continue
        clips += 1
        seconds += info.duration
        size += wav.stat().st_size
    problems = []
    if bad_lines:
        problems.append(
            f"metadata.csv lines {', '.join(map(str, bad_lines[:5]))} are not '<id>|<text>' with both parts: "
            "fix or drop those clips in the dataset step"
        )
    if missing:
        problems.append(
            f"{len(missing)} clip(s) in metadata.csv have no wav in {ws.dataset / 'wavs'} (e.g. {missing[0]}): "
            "run the dataset steps again"
        )
    if unreadable:
        problems.append(
            f"{len(unreadable)} wav file(s) cannot be read (e.g. {unreadable[0]}): re-import them"
        )
    if clips == 0 and not (bad_lines or missing or unreadable):
        problems.append(
            "the dataset is empty (metadata.csv lists no clips): add recordings and run the dataset steps"
        )
    elif clips < preset.min_clips:
        problems.append(
            f"the dataset has {clips} usable clip(s); the {preset.name} preset needs at least {preset.min_clips}: "
            "add recordings (or keep more clips) and run the dataset steps again"
        )
    if clips and seconds / 60 < preset.min_minutes:
        problems.append(
            f"the dataset holds {seconds / 60:.1f} minutes of speech; the {preset.name} preset needs at least "
            f"{preset.min_minutes:g}, and that only when fine-tuning from a Piper checkpoint (base_checkpoint): "
            "add recordings"
        )
    return DatasetSummary(clips, seconds, size), problems


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gb(count: float) -> str:
    return f"{count / 2**30:.1f}"


def _disk_problems(
    ws: Workspace, cfg: TrainSettings, summary: DatasetSummary, checkpoint_bytes: int
) -> list[str]:
    folder = _existing(ws.root)
    free = shutil.disk_usage(folder).free
    present = sum(path.stat().st_size for path in checkpoints_dir(ws).glob("*.ckpt"))
    # last.ckpt + the kept step checkpoints + one being written
    need = summary.bytes * cfg.disk_factor + checkpoint_bytes * (cfg.keep_checkpoints + 2) - present
    if need <= free:
        return []
    advice = f"free {_gb(need - free)} GB there"
    if cfg.keep_checkpoints:
        advice += ", lower keep_checkpoints"
    if cfg.preset.name != "tiny":
        advice += " or use the tiny preset"
    return [
        f"training needs about {_gb(need)} GB of free disk in {folder} and {_gb(free)} GB is free: {advice}"
    ]


def _ram_problems(cfg: TrainSettings) -> list[str]:
    available = psutil.virtual_memory().available // MIB
    if available >= cfg.ram_mb:
        return []
    advice = "stop other jobs" + (" or use the tiny preset" if cfg.preset.name != "tiny" else "")
    return [
        f"the {cfg.preset.name} preset needs about {cfg.ram_mb} MB of free memory and {available} MB is available: "
        f"{advice}"
    ]


def vram_needed_mb(batch_size: int, precision: str) -> int:
    """Estimated GPU memory per device for one training process at `batch_size` (see VRAM_BASE_MB)."""
    return VRAM_BASE_MB + VRAM_PER_CLIP_MB[precision] * batch_size


def _gpu_problems(cfg: TrainSettings, gpus: Sequence[GpuDevice]) -> list[str]:
    if not gpus:
        return [
            f"the {cfg.preset.name} preset trains on a CUDA GPU and none is visible here: use the tiny preset"
        ]
    if cfg.devices > len(gpus):
        return [
            f"devices is {cfg.devices} but this machine has {len(gpus)} GPU(s): set devices to {len(gpus)}"
        ]
    need = vram_needed_mb(cfg.batch_size, cfg.precision)
    chosen = sorted(gpus, key=lambda gpu: gpu.free_mb, reverse=True)[: cfg.devices]
    short = [gpu for gpu in chosen if gpu.free_mb < need]
    if not short:
        return []
    tightest = min(short, key=lambda gpu: gpu.free_mb)
    fits = (tightest.free_mb - VRAM_BASE_MB) // VRAM_PER_CLIP_MB[cfg.precision]
    where = f"GPU {tightest.index} ({tightest.name}) has {tightest.free_mb} MB free"
    if fits >= 1:
        return [f"{where} and batch_size {cfg.batch_size} needs about {need} MB: lower batch_size to {fits}"]
    return [
        f"{where}; even batch_size 1 needs about {vram_needed_mb(1, cfg.precision)} MB: free that GPU first"
    ]


def preflight(
    ws: Workspace, params: dict[str, Any], gpus: Sequence[GpuDevice] = (), weights_dir: Path | None = None
) -> list[str]:
    """Everything that would stop `train` or make it fail, each saying what to change; [] when ready.

    `gpus` are the devices the task could lease (the allocator's `devices`, with their free memory).
    """
    try:
        cfg = settings(params)
        base = base_checkpoint_path(cfg.base_checkpoint, weights_dir) if cfg.base_checkpoint else None
    except BadInput as error:
        return [error.message]
    summary, problems = inspect_dataset(ws, cfg.preset)
    checkpoint_bytes = base.stat().st_size if base else cfg.preset.checkpoint_mb * MIB
    problems += _disk_problems(ws, cfg, summary, checkpoint_bytes)
    problems += _ram_problems(cfg)
    if cfg.preset.gpu:
        problems += _gpu_problems(cfg, gpus)
    return problems


# ---- the child process --------------------------------------------------------------------------------
def _child_env(lease: Lease | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(lease.env if lease else {"CUDA_VISIBLE_DEVICES": ""})  # no GPUs leased: none visible
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are printed
    env["HF_HUB_OFFLINE"] = "1"
    # Lightning warns, in 13 lines, that step checkpoints of manual optimization hold the weights
    # after the step's update: exactly what a resume wants.
    env["PYTHONWARNINGS"] = "ignore:Using ModelCheckpoint with manual optimization"
    return env


def _is_trainer_of(proc: psutil.Process, ws: Workspace) -> bool:
    """Whether `proc` is this workspace's Piper child (a PID file of an older studio holds only a pid)."""
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    return ENTRY_MODULE in cmdline and any(str(ws.root) in arg for arg in cmdline)


def _stop_leftover(ws: Workspace, report: StepReport) -> None:
    """Stop a child an earlier server run started for this workspace and never reaped."""
    stop_orphans(
        ws.work / PID_FILE,
        grace_s=STOP_GRACE_SECONDS,
        matches=lambda proc: _is_trainer_of(proc, ws),
        announce=lambda pid: report.log(f"stopping the Piper process (pid {pid}) an earlier run left behind"),
    )


def _run_child(
    argv: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    pid_file: Path | None,
    report: StepReport,
    on_line: Callable[[str], None],
) -> tuple[int, list[str]]:
    """Run `argv` under the studio's supervisor (own process group, each output line to `on_line`,
    stopped whole on cancel; `pid_file` records it for restart recovery).

    Returns the exit status (negative: the signal that ended it) and the last lines of its output.
    Whatever ends this call (cancel, an error raised by `on_line`), no process of the tree is left.
    """

    def cancel_asked() -> bool:
        if report.cancelled:
            report.log("cancel asked: stopping the training process")
            return True
        return False

    outcome = SupervisedProcess(
        argv,
        cwd=cwd,
        env=env,
        on_line=on_line,
        cancelled=cancel_asked,
        grace_s=STOP_GRACE_SECONDS,
        poll_s=POLL_SECONDS,
        tail_lines=TAIL_LINES,
        tail_filter=lambda line: not line.startswith(EVENT_PREFIX),
        pid_file=pid_file,
    ).run()
    if outcome.cancelled:
        raise TaskCancelled()
    return outcome.returncode, outcome.tail


def _logger(report: StepReport) -> Callable[[str], None]:
    def log(line: str) -> None:
        if line.strip():
            report.log(line)

    return log


def _run_piper(
    argv: list[str], lease: Lease | None, ws: Workspace, report: StepReport, on_line: Callable[[str], None]
) -> tuple[int, list[str]]:
    """A `piper_entry` child for this workspace, recorded in its pid file for restart recovery."""
    ws.work.mkdir(parents=True, exist_ok=True)
    return _run_child(argv, _child_env(lease), ws.work, ws.work / PID_FILE, report, on_line)


def run_logged(
    command: Sequence[str],
    report: StepReport,
    cwd: Path,
    env: dict[str, str] | None = None,
    lease: Lease | None = None,
    what: str = "the training step",
) -> dict[str, Any]:
    """Run another trainer's command (GPT-SoVITS's scripts) the same way: own process group, every
    output line into the step's log, stopped on cancel, TaskFailed with its reason if it fails.

    `env` is added to this process's environment, then the lease's CUDA_VISIBLE_DEVICES.
    """
    full_env = dict(os.environ) | (env or {}) | (lease.env if lease else {})
    started = time.monotonic()
    report.log("running: " + " ".join(command))
    returncode, tail = _run_child(command, full_env, cwd, None, report, _logger(report))
    if returncode != 0:
        raise TaskFailed(failure_reason(what, returncode, tail))
    return {"command": list(command), "seconds": round(time.monotonic() - started, 1)}


def failure_reason(what: str, returncode: int, tail: Sequence[str], batch_size: int | None = None) -> str:
    """Why a Piper child failed, from its exit status and last lines, with what to do about it."""
    text = "\n".join(tail)
    if "CUDA out of memory" in text or "OutOfMemoryError" in text:
        lower = f"lower batch_size to {max(1, batch_size // 2)}" if batch_size else "lower batch_size"
        return f"{what} ran out of GPU memory: {lower} or use precision bf16-mixed"
    if returncode == -signal.SIGKILL:
        return (
            f"{what} was killed (SIGKILL), most often because the machine ran out of memory: "
            "use the tiny preset or a smaller batch_size, or stop other jobs"
        )
    if returncode < 0:
        return f"{what} was stopped by {signal.Signals(-returncode).name}"
    errors = [
        match.group(1)
        for line in tail
        if (match := re.match(r"^(?:\[rank\d+\]:\s*)?([\w.]*(?:Error|Exception)\b.*)$", line.strip()))
    ]
    detail = errors[-1] if errors else (tail[-1].strip() if tail else "it printed nothing")
    return f"{what} failed (exit status {returncode}): {detail}"


# ---- training -------------------------------------------------------------------------------------------
class _LossLog:
    """The live loss curve in `train/loss.json`: a list of {"step", "epoch", "loss_g", "loss_d", ...}."""

    def __init__(self, path: Path, keep_until: int) -> None:
        self.path = path
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = []
        # Steps after the checkpoint a resume starts from are trained again: their old points go.
        self.entries: list[dict[str, Any]] = [
            e for e in entries if isinstance(e, dict) and e.get("step", 0) <= keep_until
        ]
        self._dirty = True
        self._written = 0.0

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self._dirty = True
        if time.monotonic() - self._written >= LOSS_WRITE_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.entries))
        partial.replace(self.path)
        self._dirty, self._written = False, time.monotonic()


class _FitWatcher:
    """Turns the trainer's output into the step's log, progress and loss curve."""

    def __init__(self, report: StepReport, max_steps: int, losses: _LossLog, fine_tuning: bool) -> None:
        self.report = report
        self.max_steps = max_steps
        self.losses = losses
        self.fine_tuning = fine_tuning
        self._logged = 0.0

    def on_line(self, line: str) -> None:
        if not line.startswith(EVENT_PREFIX):
            if line.strip():
                self.report.log(line)
            self._check_warmstart(line)
            return
        event = json.loads(line[len(EVENT_PREFIX) :])
        kind, step = event.pop("event"), event.get("step", 0)
        if kind == "start":
            how = (
                f"resuming from {Path(event['resumed_from']).name}"
                if event.get("resumed_from")
                else "starting"
            )
            self.report.log(f"training: {how} at step {step} of {self.max_steps}")
        elif kind == "step":
            metrics = {name.removeprefix("train_"): value for name, value in event.items()}
            self.losses.add(metrics)
            self.report.step_progress(min(step / self.max_steps, 1.0))
            if time.monotonic() - self._logged >= STEP_LOG_SECONDS or step >= self.max_steps:
                self._logged = time.monotonic()
                shown = " ".join(
                    f"{k} {v:.3f}" for k, v in metrics.items() if k in ("loss_g", "loss_d", "mel")
                )
                self.report.log(f"step {step}/{self.max_steps}: {shown}")
        elif kind == "checkpoint":
            self.report.log(f"checkpoint saved at step {step}: {Path(event['path']).name}")
        elif kind == "validation":
            shown = " ".join(f"{k} {v:.3f}" for k, v in event.items() if k != "step")
            self.report.log(f"validation at step {step}: {shown}")

    def _check_warmstart(self, line: str) -> None:
        match = re.search(r"\[warmstart\] Copied (\d+) parameters .*\((\d+) skipped", line)
        if self.fine_tuning and match and int(match.group(1)) == 0:
            raise TaskFailed(
                "the base checkpoint shares no weights with this model: use a Piper voice checkpoint (.ckpt)"
            )


def _architecture(hparams: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The VitsModel arguments and phoneme count a checkpoint's weights were built with."""
    return {key: hparams[key] for key in ARCHITECTURE if key in hparams}, int(hparams.get("num_symbols", 256))


def _dataset_fingerprint(ws: Workspace) -> str:
    digest = hashlib.sha256((ws.dataset / "metadata.csv").read_bytes())
    for wav in sorted((ws.dataset / "wavs").glob("*.wav")):
        stat = wav.stat()
        digest.update(f"{wav.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _fresh_cache(ws: Workspace) -> Path:
    """Piper's cache folder, emptied when the dataset changed since it was filled: Piper keys its
    cache by line number and text, so a clip re-cut with the same text would keep its old audio."""
    cache = ws.work / "piper_cache"
    stamp = ws.work / "piper_cache.sha256"
    fingerprint = _dataset_fingerprint(ws)
    if not stamp.is_file() or stamp.read_text() != fingerprint:
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        stamp.write_text(fingerprint)
    return cache


def _fit_config(
    ws: Workspace,
    cfg: TrainSettings,
    devices: int,
    model: dict[str, Any],
    num_symbols: int,
    resume: Path | None,
    base: Path | None,
) -> dict[str, Any]:
    """The LightningCLI config for `piper.train fit` (what `--config` reads)."""
    folder = train_dir(ws)
    model = {"sample_rate": SAMPLE_RATE, "num_speakers": 1, **model, "mos_metric": "none"}
    if base and not resume:  # a resume restores every weight from its own checkpoint
        model["warmstart_ckpt"] = str(base)
    strategy = cfg.strategy or ("ddp_find_unused_parameters_true" if devices > 1 else "auto")
    return {
        "trainer": {
            "accelerator": "gpu" if cfg.preset.gpu else "cpu",
            "devices": devices,
            "strategy": strategy,
            "precision": cfg.precision,
            "max_steps": cfg.max_steps,
            "max_epochs": -1,
            "enable_progress_bar": False,  # the studio reports progress from StudioProgress's lines
            "num_sanity_val_steps": 0,  # validation runs at each epoch's end anyway
            "log_every_n_steps": min(50, cfg.checkpoint_every),
            "default_root_dir": str(folder),
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(folder), "name": "logs"},
            },
            "callbacks": [
                {
                    "class_path": f"{ENTRY_MODULE}.StudioCheckpoint",
                    "init_args": {
                        "dirpath": str(checkpoints_dir(ws)),
                        "every_n_train_steps": cfg.checkpoint_every,
                        "keep": cfg.keep_checkpoints,
                    },
                },
                {"class_path": f"{ENTRY_MODULE}.StudioProgress"},
            ],
        },
        "model": model,
        "data": {
            "csv_path": str(ws.dataset / "metadata.csv"),
            "audio_dir": str(ws.dataset / "wavs"),
            "cache_dir": str(_fresh_cache(ws)),
            "config_path": str(folder / "config.json"),
            "voice_name": cfg.voice_name,
            "espeak_voice": cfg.espeak_voice,
            "batch_size": cfg.batch_size,
            "num_workers": cfg.num_workers,
            "num_symbols": num_symbols,
        },
        "ckpt_path": str(resume) if resume else None,
    }


def _settings_or_fail(params: dict[str, Any]) -> TrainSettings:
    try:
        return settings(params)
    except BadInput as error:
        raise TaskFailed(error.message) from None


def train(
    ws: Workspace,
    params: dict[str, Any],
    report: StepReport,
    lease: Lease | None,
    weights_dir: Path | None = None,
) -> dict[str, Any]:
    """Train (or keep training) the workspace's Piper voice up to `max_steps`; returns where it got.

    `lease` gives the GPUs (none: the CPU); `weights_dir` is where `base_checkpoint` must be. Raises
    TaskFailed with the reason (dataset, parameters, the trainer's own error) and TaskCancelled on
    cancel, with the trainer stopped either way. Succeeds only with a checkpoint at `max_steps`.
    """
    cfg = _settings_or_fail(params)
    _, problems = inspect_dataset(ws, cfg.preset)
    if problems:
        raise TaskFailed("the dataset cannot be trained on: " + "; ".join(problems))
    gpus = lease.gpus if lease else ()
    if cfg.preset.gpu and not gpus:
        raise TaskFailed(
            f"the {cfg.preset.name} preset trains on a CUDA GPU and this task has none: use the tiny preset"
        )
    report.check_cancelled()
    _stop_leftover(ws, report)
    checkpoints_dir(ws).mkdir(parents=True, exist_ok=True)

    resume, base = latest_checkpoint(ws), None
    if resume:
        start_step, hparams = checkpoint_info(resume)
        model, num_symbols = _architecture(hparams)
        report.log(f"continuing from {resume.name} (step {start_step})")
    elif cfg.base_checkpoint:
        try:
            base = base_checkpoint_path(cfg.base_checkpoint, weights_dir)
        except BadInput as error:
            raise TaskFailed(error.message) from None
        _, hparams = checkpoint_info(base)
        if int(hparams.get("num_speakers", 1)) > 1:
            raise TaskFailed(
                f"{base.name} is a multi-speaker checkpoint: fine-tune from a single-speaker Piper voice"
            )
        start_step, (model, num_symbols) = 0, _architecture(hparams)
        report.log(
            f"fine-tuning from {base.name} (its architecture, at {model.get('sample_rate', SAMPLE_RATE)} Hz)"
        )
    else:
        start_step, model, num_symbols = 0, dict(cfg.preset.model), 256
        report.log(f"training a new {cfg.preset.name} Piper voice from scratch")
    result = {"preset": cfg.preset.name, "max_steps": cfg.max_steps, "resumed_from_step": start_step or None}
    if resume and start_step >= cfg.max_steps:
        report.log(f"already trained to step {start_step} (max_steps {cfg.max_steps}): nothing to do")
        return result | {"checkpoint": str(resume), "step": start_step, "seconds": 0.0}

    devices = len(gpus) if cfg.preset.gpu else 1
    config_path = ws.work / FIT_CONFIG
    config_path.write_text(yaml.safe_dump(_fit_config(ws, cfg, devices, model, num_symbols, resume, base)))
    losses = _LossLog(loss_file(ws), keep_until=start_step)
    watcher = _FitWatcher(report, cfg.max_steps, losses, fine_tuning=base is not None)
    argv = [sys.executable, "-m", ENTRY_MODULE, "fit", "--config", str(config_path)]
    where = f"{devices} GPU(s)" if cfg.preset.gpu else "the CPU"
    report.log(f"Piper trainer: batch_size {cfg.batch_size}, {cfg.precision}, on {where}")
    started = time.monotonic()
    try:
        returncode, tail = _run_piper(argv, lease, ws, report, watcher.on_line)
    finally:
        losses.flush()
    if returncode != 0:
        raise TaskFailed(failure_reason("Piper training", returncode, tail, cfg.batch_size))
    final = latest_checkpoint(ws)
    step = checkpoint_info(final)[0] if final else None
    if final is None or step is None or step < cfg.max_steps:
        saved = f"its last checkpoint is at step {step}" if final else "it wrote no checkpoint"
        last_line = tail[-1] if tail else "it printed nothing"
        raise TaskFailed(f"the Piper trainer stopped before max_steps {cfg.max_steps} ({saved}): {last_line}")
    report.step_progress(1.0)
    last = losses.entries[-1] if losses.entries else {}
    return result | {
        "checkpoint": str(final),
        "step": step,
        "seconds": round(time.monotonic() - started, 1),
        "loss_g": last.get("loss_g"),
        "loss_d": last.get("loss_d"),
    }


# ---- export -----------------------------------------------------------------------------------------------
def _check_voice_config(config: dict[str, Any], source: Path) -> None:
    """The keys `piper.PiperVoice.load` reads (PiperConfig.from_dict) must be there."""
    missing = [
        key
        for key, present in (
            ("num_symbols", "num_symbols" in config),
            ("num_speakers", "num_speakers" in config),
            ("audio.sample_rate", "sample_rate" in config.get("audio", {})),
            ("espeak.voice", "voice" in config.get("espeak", {})),
            ("phoneme_id_map", bool(config.get("phoneme_id_map"))),
        )
        if not present
    ]
    if missing:
        raise TaskFailed(f"the voice config {source} lacks {', '.join(missing)}: train again to rewrite it")


def _smoke_test(onnx: Path, config: Path) -> float:
    """Seconds of audio the exported voice speaks for a short sentence through the piper runtime."""
    from piper import PiperVoice

    try:
        voice = PiperVoice.load(onnx, config)
        samples = sum(len(chunk.audio_float_array) for chunk in voice.synthesize("Hello, this is a test."))
    except Exception as error:
        raise TaskFailed(f"the exported voice does not load or speak in the piper runtime: {error}") from None
    if not samples:
        raise TaskFailed("the exported voice spoke no audio for a test sentence")
    return samples / voice.config.sample_rate


def _install(source: Path, target: Path) -> None:
    """Copy `source` to `target` so that `target` is never seen half-written."""
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    partial.replace(target)


def export(ws: Workspace, params: dict[str, Any], report: StepReport, voices_dir: Path) -> dict[str, Any]:
    """Export the last checkpoint to `voice/<voice_name>.onnx` + `.onnx.json` and install the voice.

    The pair is checked in the piper runtime (it must load and speak), then copied into `voices_dir`
    (the data folder's `piper_voices/`, where the Piper engine finds it by file stem). A voice of that
    name installed by another training is never replaced.
    """
    try:
        name = check_voice_name(params.get("voice_name"))
    except BadInput as error:
        raise TaskFailed(error.message) from None
    installed_config = voices_dir / f"{name}.onnx.json"
    if installed_config.is_file():
        try:
            owner = (
                json.loads(installed_config.read_text(encoding="utf-8")).get("studio", {}).get("workspace")
            )
        except ValueError:
            owner = None
        if owner != str(ws.root):
            raise TaskFailed(
                f"a Piper voice named '{name}' is already installed (not from this training): choose another voice_name"
            )
    checkpoint = latest_checkpoint(ws)
    if checkpoint is None:
        raise TaskFailed(f"there is no checkpoint in {checkpoints_dir(ws)}: run the training step first")
    source_config = train_dir(ws) / "config.json"
    try:
        config = json.loads(source_config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TaskFailed(
            f"the voice config Piper writes when training ({source_config}) is missing: train again"
        ) from None
    _check_voice_config(config, source_config)
    step, _ = checkpoint_info(checkpoint)
    report.check_cancelled()
    _stop_leftover(ws, report)
    staging = ws.work / "export"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    onnx = staging / f"{name}.onnx"
    report.log(f"exporting {checkpoint.name} (step {step}) to ONNX")
    argv = [
        sys.executable,
        "-m",
        ENTRY_MODULE,
        "export",
        "--checkpoint",
        str(checkpoint),
        "--output-file",
        str(onnx),
    ]
    returncode, tail = _run_piper(argv, None, ws, report, _logger(report))
    if returncode != 0 or not onnx.is_file():
        raise TaskFailed(failure_reason("the ONNX export", returncode, tail))
    report.step_progress(0.8)
    config["dataset"] = name
    config["studio"] = {"workspace": str(ws.root), "checkpoint": checkpoint.name, "step": step}
    onnx_config = staging / f"{name}.onnx.json"
    onnx_config.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    seconds = _smoke_test(onnx, onnx_config)
    report.log(f"the exported voice loads and speaks ({seconds:.2f} s for a test sentence)")
    ws.voice.mkdir(parents=True, exist_ok=True)
    voices_dir.mkdir(parents=True, exist_ok=True)
    for folder in (ws.voice, voices_dir):  # the .onnx first: the engine lists a voice once its .json exists
        _install(onnx, folder / onnx.name)
        _install(onnx_config, folder / onnx_config.name)
    shutil.rmtree(staging, ignore_errors=True)
    report.step_progress(1.0)
    report.log(f"voice '{name}' installed in {voices_dir}")
    return {
        "voice_id": name,
        "onnx": str(voices_dir / onnx.name),
        "config": str(installed_config),
        "step": step,
        "size_mb": round((voices_dir / onnx.name).stat().st_size / MIB, 1),
    }
