"""GptSovitsEngine without GPT-SoVITS's models: what it reports missing, and the commands and configs it
builds for each step.

The tests lay out a folder like the repository (the two config files with the content of the v2
release's `configs/s2.json` and `configs/s1longer-v2.yaml`, every other required file empty) and an
environment made by hand (the studio's own interpreter, stamped as installed), and check the status
messages, the commands and the configs written. Upstream's scripts, trainers and inference running
on tiny random weights in its real environment are tests/test_gpt_sovits_worker.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engines.base import EngineState, UnknownVoice
from engines.clone_code import ffmpeg_on_path
from engines.environment import STAMP, EngineEnvironment
from engines.gpt_sovits import (
    BERT,
    CODE,
    G2PW,
    HUBERT,
    NLTK_DATA,
    PACKAGE,
    S1,
    S1_CONFIG,
    S2_CONFIG,
    S2D,
    S2G,
    STEP_SCRIPTS,
    GptSovitsEngine,
)
from engines.gpu import GpuAllocator, GpuDevice, Lease
from studio.services.training.common import Workspace

FAKE_GPU = GpuDevice(0, "Fake GPU", 81920, 81920)
S2_JSON = {  # GPT_SoVITS/configs/s2.json of the v2 release
    "train": {
        "log_interval": 100,
        "eval_interval": 500,
        "seed": 1234,
        "epochs": 100,
        "learning_rate": 0.0001,
        "betas": [0.8, 0.99],
        "eps": 1e-09,
        "batch_size": 32,
        "fp16_run": True,
        "lr_decay": 0.999875,
        "segment_size": 20480,
        "init_lr_ratio": 1,
        "warmup_epochs": 0,
        "c_mel": 45,
        "c_kl": 1.0,
        "text_low_lr_rate": 0.4,
        "grad_ckpt": False,
    },
    "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048, "hop_length": 640},
    "model": {"inter_channels": 192, "hidden_channels": 192, "semantic_frame_rate": "25hz"},
    "s2_ckpt_dir": "logs/s2/big2k1",
    "content_module": "cnhubert",
}
S1_YAML = """\
train:
  seed: 1234
  epochs: 20
  batch_size: 8
  save_every_n_epoch: 1
  precision: 16-mixed
  gradient_clip: 1.0
optimizer:
  lr: 0.01
  lr_init: 0.00001
  lr_end: 0.0001
  warmup_steps: 2000
  decay_steps: 40000
data:
  max_eval_sample: 8
  max_sec: 54
  num_workers: 4
  pad_val: 1024
model:
  vocab_size: 1025
  phoneme_vocab_size: 732
  embedding_dim: 512
  hidden_dim: 512
  head: 16
  linear_units: 2048
  n_layer: 24
  dropout: 0
  EOS: 1024
  random_bert: 0
inference:
  top_k: 15
"""
REQUIRED_FILES = (
    *(f"{CODE}/{script}" for script in STEP_SCRIPTS.values()),
    f"{CODE}/{S2_CONFIG}",
    f"{CODE}/{S1_CONFIG}",
    f"{PACKAGE}/TTS_infer_pack/TTS.py",
    S2G,
    S2D,
    S1,
)
REQUIRED_FOLDERS = (BERT, HUBERT, G2PW, NLTK_DATA)


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """gpt-sovits's environment as an install leaves it (this interpreter, stamped with its pins)."""
    monkeypatch.setenv("STUDIO_ENGINE_ENVS", str(tmp_path / "envs"))
    folder = tmp_path / "envs" / "gpt-sovits"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(sys.executable)
    (folder / STAMP).write_text(EngineEnvironment("gpt-sovits").fingerprint)
    return folder / "bin" / "python"


def lay_out(weights: Path) -> None:
    """A folder shaped like a GPT-SoVITS install: real configs, every other file empty."""
    for relative in REQUIRED_FILES:
        (weights / relative).parent.mkdir(parents=True, exist_ok=True)
        (weights / relative).touch()
    for relative in REQUIRED_FOLDERS:
        (weights / relative).mkdir(parents=True, exist_ok=True)
    (weights / CODE / S2_CONFIG).write_text(json.dumps(S2_JSON))
    (weights / CODE / S1_CONFIG).write_text(S1_YAML)


def workspace(root: Path) -> Workspace:
    ws = Workspace(root / "task-7")
    (ws.dataset / "wavs").mkdir(parents=True)
    (ws.dataset / "metadata.csv").write_text("clip000|Hello there.\nclip001|How are you today?\n")
    return ws


def split_env(command: list[str]) -> tuple[dict[str, str], list[str]]:
    """`env A=1 B=2 prog args` -> ({A: 1, B: 2}, [prog, args])."""
    assert Path(command[0]).name == "env"
    env, rest = {}, command[1:]
    while rest and "=" in rest[0] and not rest[0].startswith("/"):
        key, _, value = rest.pop(0).partition("=")
        env[key] = value
    return env, rest


def test_empty_weights_name_its_environment_and_every_missing_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_ENGINE_ENVS", str(tmp_path / "no-envs"))
    engine = GptSovitsEngine(tmp_path, GpuAllocator(devices=[]))
    status = engine.status()
    assert status.state == EngineState.NEEDS_ENVIRONMENT
    assert "environment 'gpt-sovits'" in status.missing[0]
    assert "python -m studio.engines install gpt_sovits" in status.missing[0]  # by the engine's name
    for relative in (*REQUIRED_FILES, *REQUIRED_FOLDERS):
        assert any(str(tmp_path / relative) in text for text in status.missing), relative
    assert len(status.missing) == 1 + len(REQUIRED_FILES) + len(REQUIRED_FOLDERS)
    assert not any("GPU" in text for text in status.missing)  # its scripts fall back to the CPU
    script = next(text for text in status.missing if "s2_train.py" in text)
    assert "git clone https://github.com/RVC-Boss/GPT-SoVITS" in script
    model = next(text for text in status.missing if "s2G2333k.pth" in text)
    assert "huggingface-cli download lj1995/GPT-SoVITS" in model
    assert "G2PWModel.zip" in next(text for text in status.missing if "G2PWModel" in text)
    assert "nltk.downloader" in next(text for text in status.missing if "nltk_data" in text)
    assert engine.info.license == "MIT" and engine.info.environment == "gpt-sovits"
    assert {c.value for c in engine.info.capabilities} == {"train", "tts"}  # it speaks the voices it trained


def test_a_complete_install_is_ready_and_one_missing_model_is_named(
    tmp_path: Path, environment: Path
) -> None:
    lay_out(tmp_path)
    engine = GptSovitsEngine(tmp_path, GpuAllocator(devices=[]))
    assert engine.status().state == EngineState.READY
    (tmp_path / S1).unlink()
    status = engine.status()
    assert status.state == EngineState.NEEDS_WEIGHTS
    assert len(status.missing) == 1 and str(tmp_path / S1) in status.missing[0]


def test_its_voices_are_the_exported_ones(tmp_path: Path, environment: Path) -> None:
    lay_out(tmp_path / "weights")
    voices = tmp_path / "voices"
    engine = GptSovitsEngine(tmp_path / "weights", GpuAllocator(devices=[]), voices)
    assert engine.voices() == []
    with pytest.raises(UnknownVoice, match="no voice 'any'"):
        list(engine.synthesize("Hello.", "any"))
    (voices / "mei").mkdir(parents=True)
    (voices / "mei" / "voice.json").write_text(json.dumps({"name": "mei", "language": "zh", "task": "t1"}))
    (voices / "broken").mkdir()
    (voices / "broken" / "voice.json").write_text("{not json")
    [voice] = engine.voices()
    assert (voice.id, voice.engine, voice.language) == ("mei", "gpt_sovits", "zh")
    assert engine.voice_folder("mei") == voices / "mei"


def test_dataset_steps_run_its_scripts_with_webui_variables(tmp_path: Path, environment: Path) -> None:
    weights = tmp_path / "weights"
    lay_out(weights)
    engine = GptSovitsEngine(weights, GpuAllocator(devices=[FAKE_GPU]))
    ws = workspace(tmp_path)
    lease = Lease("lease", "task-7", (2, 3), True, 0)
    exp = ws.work / "gpt_sovits"

    env, rest = split_env(engine.step_command("extract_text_features", ws, {}, lease))
    assert rest == [str(environment), "GPT_SoVITS/prepare_datasets/1-get-text.py"]
    assert (engine.code_dir / rest[1]).is_file()  # relative to the code folder, the command's cwd
    assert env["bert_pretrained_dir"] == str(weights / BERT)
    assert env["_CUDA_VISIBLE_DEVICES"] == "2,3" and env["is_half"] == "True" and env["version"] == "v2"
    assert env["PYTHONPATH"] == f"{weights / CODE}:{weights / CODE / 'GPT_SoVITS'}"
    assert env["exp_name"] == "task-7" and env["opt_dir"] == str(exp)
    assert (env["i_part"], env["all_parts"]) == ("0", "1")
    assert env["inp_wav_dir"] == str(ws.dataset / "wavs")
    assert env["NLTK_DATA"] == str(weights / NLTK_DATA)  # g2p_en would download its data otherwise
    assert Path(env["inp_text"]).read_text().splitlines() == [
        f"{ws.dataset / 'wavs' / 'clip000.wav'}|task-7|en|Hello there.",
        f"{ws.dataset / 'wavs' / 'clip001.wav'}|task-7|en|How are you today?",
    ]

    env, rest = split_env(engine.step_command("extract_audio_features", ws, {"language": "zh"}, lease))
    assert rest[1] == "GPT_SoVITS/prepare_datasets/2-get-hubert-wav32k.py"
    assert env["cnhubert_base_dir"] == str(weights / HUBERT)
    assert "|task-7|zh|" in Path(env["inp_text"]).read_text()

    env, rest = split_env(engine.step_command("extract_semantic_features", ws, {}, None))
    assert rest[1] == "GPT_SoVITS/prepare_datasets/3-get-semantic.py"
    assert env["pretrained_s2G"] == str(weights / S2G)
    assert (engine.code_dir / env["s2config_path"]).is_file()
    assert env["_CUDA_VISIBLE_DEVICES"] == "" and env["is_half"] == "False"  # no GPU leased: the CPU


def test_ffmpeg_is_put_on_path_over_a_link_left_dangling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream calls `ffmpeg` by name; a link left by a removed environment (CI's failure) is replaced."""
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").symlink_to(tmp_path / "gone" / "ffmpeg")
    assert ffmpeg_on_path(bin_dir) == ffmpeg_on_path(bin_dir) == {"PATH": f"{bin_dir}:{tmp_path / 'nothing'}"}
    assert [p.name for p in bin_dir.iterdir()] == ["ffmpeg"]
    version = subprocess.run(
        [str(bin_dir / "ffmpeg"), "-version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("ffmpeg version")


def test_training_steps_write_the_configs_webui_writes(tmp_path: Path, environment: Path) -> None:
    weights = tmp_path / "weights"
    lay_out(weights)
    engine = GptSovitsEngine(weights, GpuAllocator(devices=[FAKE_GPU]))
    ws = workspace(tmp_path)
    lease = Lease("lease", "task-7", (1,), True, 0)
    exp = ws.work / "gpt_sovits"

    env, rest = split_env(
        engine.step_command("train_sovits", ws, {"batch_size": 6, "sovits_epochs": 3}, lease)
    )
    assert rest[1:3] == ["GPT_SoVITS/s2_train.py", "--config"]
    s2 = json.loads(Path(rest[3]).read_text())
    assert s2["train"]["batch_size"] == 6 and s2["train"]["epochs"] == 3
    assert s2["train"]["gpu_numbers"] == "1" and s2["train"]["fp16_run"] is True
    assert s2["train"]["pretrained_s2G"] == str(weights / S2G)
    assert s2["train"]["pretrained_s2D"] == str(weights / S2D)
    assert s2["data"]["exp_dir"] == s2["s2_ckpt_dir"] == str(exp)
    assert s2["save_weight_dir"] == str(ws.root / "train" / "SoVITS_weights")
    assert s2["model"]["version"] == "v2" and s2["name"] == "task-7"
    assert s2["data"]["sampling_rate"] == 32000  # the rest of the repository's config is kept

    env, rest = split_env(engine.step_command("train_gpt", ws, {"gpt_epochs": 4}, lease))
    assert rest[1:3] == ["GPT_SoVITS/s1_train.py", "--config_file"]
    assert env["hz"] == "25hz" and env["_CUDA_VISIBLE_DEVICES"] == "1"
    s1 = yaml.safe_load(Path(rest[3]).read_text())
    assert s1["train"]["epochs"] == 4 and s1["train"]["exp_name"] == "task-7"
    assert s1["pretrained_s1"] == str(weights / S1)
    assert s1["train_semantic_path"] == str(exp / "6-name2semantic.tsv")
    assert s1["train_phoneme_path"] == str(exp / "2-name2text.txt")
    assert s1["output_dir"] == str(exp / "logs_s1_v2")
    assert s1["train"]["half_weights_save_dir"] == str(ws.root / "train" / "GPT_weights")
    assert s1["model"]["n_layer"] == 24 and s1["train"]["precision"] == "16-mixed"  # on a GPU
    _, rest = split_env(engine.step_command("train_gpt", ws, {}, None))
    assert yaml.safe_load(Path(rest[3]).read_text())["train"]["precision"] == "32"  # no fp16 on the CPU


def test_steps_it_has_no_script_for_and_bad_input_are_refused(tmp_path: Path, environment: Path) -> None:
    weights = tmp_path / "weights"
    lay_out(weights)
    engine = GptSovitsEngine(weights, GpuAllocator(devices=[FAKE_GPU]))
    ws = workspace(tmp_path)
    with pytest.raises(
        ValueError, match="no script for the step 'slice_audio'; its steps: extract_text_features"
    ):
        engine.step_command("slice_audio", ws, {})
    with pytest.raises(ValueError, match="language must be one of zh, en"):
        engine.step_command("extract_text_features", ws, {"language": "fr"})
    (ws.dataset / "metadata.csv").write_text("\n")
    with pytest.raises(ValueError, match="lists no clips"):
        engine.step_command("extract_text_features", ws, {})
