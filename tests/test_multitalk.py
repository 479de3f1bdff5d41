"""MultiTalk engine adapter: status, MultiTalk's input JSON, the command lines and every check before launch.

MultiTalk itself (its code, tens of GB of weights, CUDA GPUs) is not here, and its output is never
faked: `generate()` is only run up to the checks it makes before anything starts. The real run
belongs on a GPU machine with the weights in place. GPUs are given to the allocator as
`probe_cuda_devices` would report them, as in tests/test_gpu_allocator.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from engines.base import EngineState, EngineUnavailable
from engines.gpu import GpuAllocator, GpuDevice
from engines.multitalk import (
    ENV_PYTHON,
    MAX_FRAMES,
    SCRIPT,
    WAN,
    WAN_INDEX,
    DenoisingProgress,
    MultiTalkEngine,
    MultiTalkRequest,
    clip_count,
    gpus_for,
    memory_estimate_mb,
)

WEIGHT_FILES = [
    SCRIPT,
    ENV_PYTHON,
    f"{WAN}/config.json",
    f"{WAN}/models_t5_umt5-xxl-enc-bf16.pth",
    f"{WAN}/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    f"{WAN}/Wan2.1_VAE.pth",
    f"{WAN}/google/umt5-xxl",
    f"{WAN}/xlm-roberta-large",
    f"{WAN}/multitalk.safetensors",
    "MeiGen-MultiTalk/multitalk.safetensors",
    "chinese-wav2vec2-base/config.json",
    "chinese-wav2vec2-base/model.safetensors",
]


def gpus(count: int, free_mb: int = 140_000) -> GpuAllocator:
    return GpuAllocator([GpuDevice(i, "H200", 143_000, free_mb) for i in range(count)])


def place_weights(weights: Path) -> None:
    """The layout MultiTalk's README makes (empty files: status only looks for them)."""
    for name in WEIGHT_FILES:
        (weights / name).parent.mkdir(parents=True, exist_ok=True)
        (weights / name).touch()
    (weights / WAN_INDEX).write_text(
        json.dumps({"weight_map": {"audio_proj.norm.weight": "multitalk.safetensors"}})
    )


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A 640x360 composite and two aligned 4-second speech tracks at 16 kHz."""
    image = tmp_path / "two.png"
    Image.new("RGB", (640, 360), (90, 120, 150)).save(image)
    rng = np.random.default_rng(0)
    tracks = {}
    for n in (1, 2):
        tracks[f"a{n}"] = tmp_path / f"person{n}.wav"
        sf.write(tracks[f"a{n}"], (0.1 * rng.standard_normal(64_000)).astype(np.float32), 16_000)
    return {"image": image, **tracks}


def two_people(inputs: dict[str, Path], **changes: object) -> MultiTalkRequest:
    values: dict[str, object] = {
        "prompt": "Two friends talk at a kitchen table.",
        "image": inputs["image"],
        "audio": [inputs["a1"], inputs["a2"]],
        "bboxes": [(0, 20, 320, 360), (320, 10, 640, 350)],
        "seed": 7,
    }
    return MultiTalkRequest(**(values | changes))  # type: ignore[arg-type]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


# ---- status ----------------------------------------------------------------------------------------
def test_status_names_every_missing_item(tmp_path: Path) -> None:
    engine = MultiTalkEngine(tmp_path / "weights", GpuAllocator([]))
    status = engine.status()
    assert status.state == EngineState.NEEDS_GPU
    text = "\n".join(status.missing)
    assert "needs a CUDA GPU" in text
    for name in WEIGHT_FILES:
        assert str(tmp_path / "weights" / name) in text, name
    assert "git clone https://github.com/MeiGen-AI/MultiTalk weights/MultiTalk/code" in text
    assert "Python 3.10, torch 2.4.1" in text  # how to make its own environment
    assert "step 2 of MultiTalk's README" in text  # link multitalk.safetensors into the Wan folder
    assert "--revision refs/pr/1" in text
    assert engine.info.license.startswith("Apache-2.0") and "video" in engine.info.capabilities


def test_status_is_ready_with_the_readme_layout_and_checks_the_index(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    place_weights(weights)
    engine = MultiTalkEngine(weights, gpus(1))
    assert engine.status().state == EngineState.READY and engine.status().missing == ()
    (weights / WAN_INDEX).write_text(
        json.dumps({"weight_map": {"blocks.0.x": "diffusion_pytorch_model-00001.safetensors"}})
    )
    status = engine.status()
    assert status.state == EngineState.NEEDS_WEIGHTS and "is still Wan's own index" in status.missing[0]
    # Its own Python elsewhere: that path is what status asks for.
    elsewhere = MultiTalkEngine(weights, gpus(1), python=tmp_path / "conda" / "multitalk" / "bin" / "python")
    assert any(
        str(tmp_path / "conda" / "multitalk" / "bin" / "python") in m for m in elsewhere.status().missing
    )


def test_it_makes_video_not_speech(tmp_path: Path) -> None:
    engine = MultiTalkEngine(tmp_path, GpuAllocator([]))
    assert engine.voices() == []
    with pytest.raises(EngineUnavailable, match="makes talking video from speech, it does not speak"):
        engine.synthesize("Hello.", "any")


# ---- MultiTalk's input -----------------------------------------------------------------------------
def test_input_json_for_two_people_in_turn_with_row_first_boxes(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    engine = MultiTalkEngine(tmp_path / "weights", gpus(1))
    path = engine.build_input_json(two_people(inputs), tmp_path / "job")
    assert json.loads(path.read_text()) == {
        "prompt": "Two friends talk at a kitchen table.",
        "cond_image": str(inputs["image"].absolute()),
        "audio_type": "para",  # aligned per-person tracks (the studio's stems)
        "cond_audio": {"person1": str(inputs["a1"].absolute()), "person2": str(inputs["a2"].absolute())},
        # (left, top, right, bottom) -> MultiTalk's [top, left, bottom, right]
        "bbox": {"person1": [20, 0, 360, 320], "person2": [10, 320, 350, 640]},
    }
    in_turn = engine.build_input_json(two_people(inputs, audio_type="add"), tmp_path / "in-turn")
    assert json.loads(in_turn.read_text())["audio_type"] == "add"
    with pytest.raises(ValueError, match="audio_type must be"):
        engine.build_input_json(two_people(inputs, audio_type="mixed"), tmp_path / "bad")
    single = MultiTalkRequest("A woman sings.", inputs["image"], [inputs["a1"]], frame_num=45)
    assert json.loads(engine.build_input_json(single, tmp_path / "solo").read_text()) == {
        "prompt": "A woman sings.",
        "cond_image": str(inputs["image"].absolute()),
        "cond_audio": {"person1": str(inputs["a1"].absolute())},
    }


# ---- command lines ---------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 4, 8])
def test_command_for_each_gpu_count(tmp_path: Path, inputs: dict[str, Path], count: int) -> None:
    weights = tmp_path / "weights"
    engine = MultiTalkEngine(weights, gpus(count))
    stem = tmp_path / "job" / "multitalk"
    command = engine.command(two_people(inputs), tmp_path / "in.json", stem, count)
    assert command[0] == str(weights / SCRIPT)
    assert flag(command, "--ckpt_dir") == str(weights / WAN)
    assert flag(command, "--wav2vec_dir") == str(weights / "chinese-wav2vec2-base")
    assert flag(command, "--input_json") == str(tmp_path / "in.json")
    assert flag(command, "--size") == "multitalk-480" and flag(command, "--mode") == "streaming"
    assert flag(command, "--sample_steps") == "40" and flag(command, "--base_seed") == "7"
    assert (
        flag(command, "--sample_text_guide_scale") == "5"
        and flag(command, "--sample_audio_guide_scale") == "4"
    )
    assert flag(command, "--save_file") == str(stem) and flag(command, "--frame_num") == "81"
    if count == 1:
        assert not {"--dit_fsdp", "--t5_fsdp", "--ulysses_size"} & set(command)
    else:
        assert "--dit_fsdp" in command and "--t5_fsdp" in command
        assert flag(command, "--ulysses_size") == str(count) and flag(command, "--ring_size") == "1"
    assert "--use_teacache" not in command and "--num_persistent_param_in_dit" not in command


def test_command_for_each_preset(tmp_path: Path, inputs: dict[str, Path]) -> None:
    engine = MultiTalkEngine(tmp_path / "weights", gpus(2))
    stem = tmp_path / "multitalk"
    fast = engine.command(two_people(inputs, preset="fast"), tmp_path / "in.json", stem, 2)
    assert flag(fast, "--sample_steps") == "20" and "--use_teacache" in fast
    low = engine.command(two_people(inputs, preset="low-vram"), tmp_path / "in.json", stem, 1)
    assert flag(low, "--num_persistent_param_in_dit") == "0" and "--dit_fsdp" not in low
    chosen = engine.command(
        two_people(inputs, preset="fast", steps=8, resolution="720p"), tmp_path / "in.json", stem, 1
    )
    assert flag(chosen, "--sample_steps") == "8" and flag(chosen, "--size") == "multitalk-720"
    clip = engine.command(two_people(inputs, mode="clip", frame_num=41), tmp_path / "in.json", stem, 1)
    assert flag(clip, "--mode") == "clip" and flag(clip, "--frame_num") == "41"
    with pytest.raises(ValueError, match="low-vram preset runs on one GPU"):
        engine.command(two_people(inputs, preset="low-vram"), tmp_path / "in.json", stem, 2)
    assert memory_estimate_mb(two_people(inputs, preset="low-vram"), 1) < memory_estimate_mb(
        two_people(inputs), 1
    )
    assert memory_estimate_mb(two_people(inputs), 8) < memory_estimate_mb(two_people(inputs), 2)


def test_command_paths_are_absolute_as_multitalk_runs_from_its_clone(
    tmp_path: Path, inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = MultiTalkEngine(Path("weights"), gpus(1))  # Settings' default: relative to the server's folder
    input_json = engine.build_input_json(two_people(inputs), Path("job"))
    command = engine.command(two_people(inputs), input_json, Path("job") / "multitalk", 1)
    assert engine.python == tmp_path / "weights" / ENV_PYTHON and engine.code_dir.is_absolute()
    paths = [command[0]] + [
        flag(command, name) for name in ("--ckpt_dir", "--wav2vec_dir", "--input_json", "--save_file")
    ]
    assert all(Path(path).is_absolute() and str(path).startswith(str(tmp_path)) for path in paths), paths


@pytest.mark.parametrize("count", [3, 6, 7])
def test_gpu_counts_that_do_not_divide_the_heads_are_refused(
    tmp_path: Path, inputs: dict[str, Path], count: int
) -> None:
    engine = MultiTalkEngine(tmp_path / "weights", gpus(count))
    with pytest.raises(
        ValueError,
        match=f"40 attention heads, which do not split across {count} GPUs .* use 1, 2, 4, 5, 8, 10",
    ):
        engine.command(two_people(inputs), tmp_path / "in.json", tmp_path / "out", count)


# ---- request checks ---------------------------------------------------------------------------------
def test_requests_multitalk_cannot_take_are_refused_with_what_to_fix(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    engine = MultiTalkEngine(tmp_path / "weights", gpus(1))
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(16_000 * 3, np.float32), 16_000)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(16_000 * 41, np.float32), 16_000)
    cases = {
        "the prompt is empty": two_people(inputs, prompt="  "),
        "preset must be one of fast, quality, low-vram": two_people(inputs, preset="turbo"),
        "resolution must be one of 480p, 720p": two_people(inputs, resolution="1080p"),
        "frame_num must be 4n\\+1": two_people(inputs, frame_num=80),
        "steps must be from 1 to 100": two_people(inputs, steps=0),
        "audio_guidance must be above 0": two_people(inputs, audio_guidance=float("nan")),
        "for 1 or 2 people; got 3": two_people(inputs, audio=[inputs["a1"]] * 3, bboxes=None),
        "box 2 \\[320, 10, 700, 350\\] is not .* inside the 640x360 image": two_people(
            inputs, bboxes=[(0, 20, 320, 360), (320, 10, 700, 350)]
        ),
        "with one person MultiTalk uses the whole image": two_people(
            inputs, audio=[inputs["a1"]], bboxes=[(0, 0, 10, 10)], frame_num=45
        ),
        "the audio lasts 3.00 s; MultiTalk needs more than 81 frames": two_people(
            inputs, audio=[short], bboxes=None
        ),
        "stops at 1000 frames \\(40 s\\)": two_people(inputs, audio=[long], bboxes=None),
        "the image .* does not exist": two_people(inputs, image=tmp_path / "none.png"),
        "the audio file .* does not exist": two_people(inputs, audio=[inputs["a1"], tmp_path / "none.wav"]),
    }
    for message, request in cases.items():
        with pytest.raises(ValueError, match=message):
            engine.build_input_json(request, tmp_path / "job")
    # The same short track is fine for a shorter clip.
    engine.build_input_json(
        two_people(inputs, audio=[short], bboxes=None, mode="clip", frame_num=61), tmp_path / "job"
    )


def test_generate_checks_everything_before_starting_anything(tmp_path: Path, inputs: dict[str, Path]) -> None:
    missing = MultiTalkEngine(tmp_path / "empty", gpus(1))
    with pytest.raises(EngineUnavailable, match=r"generate_multitalk\.py"):
        missing.generate(two_people(inputs), tmp_path / "a", missing.allocator.acquire("v", 1), print)

    weights = tmp_path / "weights"
    place_weights(weights)
    three = MultiTalkEngine(weights, gpus(3))
    with pytest.raises(ValueError, match="40 attention heads, which do not split across 3"):
        three.generate(
            two_people(inputs), tmp_path / "b", three.allocator.acquire("v", 3, exclusive=True), print
        )
    small = MultiTalkEngine(weights, GpuAllocator([GpuDevice(0, "RTX 4090", 24_564, 23_000)]))
    lease = small.allocator.acquire("v", 1, exclusive=True)
    with pytest.raises(
        ValueError, match=r"GPU 0 \(RTX 4090\) has about 23000 MB free; this job needs about 40000"
    ):
        small.generate(two_people(inputs), tmp_path / "c", lease, print)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # nothing was written or started


def test_auto_takes_the_most_gpus_the_preset_can_use() -> None:
    assert [gpus_for("fast", free) for free in (0, 1, 2, 3, 5, 7, 8, 12)] == [1, 1, 2, 2, 4, 4, 8, 8]
    assert gpus_for("quality", 4) == 4 and gpus_for("low-vram", 8) == 1


def test_denoising_progress_follows_tqdm_through_each_clip(tmp_path: Path) -> None:
    request = MultiTalkRequest(prompt="", image=tmp_path / "a.png", audio=[tmp_path / "a.wav"])
    assert clip_count(3.0, request) == 1  # 75 frames: one clip of 81
    assert clip_count(9.0, request) == 4  # 225 frames: 81, then 56 more per clip
    assert clip_count(3600.0, request) == clip_count(
        MAX_FRAMES / 25, request
    )  # streaming stops at 1000 frames
    assert clip_count(30.0, replace(request, mode="clip")) == 1
    progress = DenoisingProgress(2)
    assert progress.read("loading the DiT") is None
    assert progress.read(" 50%|#####     | 20/40 [00:31<00:31,  1.6s/it]") == (
        0.25,
        "MultiTalk clip 1/2, step 20/40",
    )
    assert progress.read("100%|##########| 40/40 [01:02<00:00]")[0] == 0.5  # type: ignore[index]
    assert progress.read("  5%|5         | 2/40 [00:03<01:00]") == (0.525, "MultiTalk clip 2/2, step 2/40")
