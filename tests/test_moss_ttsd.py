"""MossTtsdEngine without MOSS-TTSD's code or weights: what it reports, the inputs it builds, the calls it makes.

MOSS-TTSD's code is not installable from a registry and its model needs a GPU, so nothing here runs
the real `AsteroidTTSInstruct` or XY tokenizer, and nothing stands in for them: what is tested is
what the engine reports until its code and weights are in place, and the pure functions that build
MOSS-TTSD's inputs (batch items, text format, attention choice, audio conversion).
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import moss_ttsd
from engines.base import EngineUnavailable, UnknownVoice
from engines.gpu import GpuAllocator, GpuDevice
from engines.moss_ttsd import (
    MossTtsdEngine,
    attention_chain,
    build_batch_item,
    format_moss_text,
    parse_moss_turns,
    pick_attention,
    to_mono_float32,
)
from tests.engine_checks import (
    check_gpu_first_then_every_path,
    check_loading_says_what_is_missing,
    check_packages_then_weights_are_missing,
)

FAKE_GPU = GpuDevice(0, "Fake GPU", 81920, 81920)
SCRIPT = "[S1]你好，欢迎收听。[S2]Thanks, glad to be here.\n[S1]我们开始吧。"
EXPECTED_PATHS = (
    "MOSS-TTSD/code/generation_utils.py",
    "MOSS-TTSD/code/XY_Tokenizer/config/xy_tokenizer_config.yaml",
    "MOSS-TTSD/MOSS-TTSD-v0.5/config.json",
    "MOSS-TTSD/XY_Tokenizer/xy_tokenizer.ckpt",
)


# ---- status and load errors ----------------------------------------------------------------------
def test_empty_weights_without_gpu_needs_gpu_and_names_every_path(tmp_path: Path) -> None:
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    missing = check_gpu_first_then_every_path(engine, tmp_path, EXPECTED_PATHS)
    code = next(text for text in missing if "generation_utils.py" in text)
    assert "git clone https://github.com/OpenMOSS/MOSS-TTSD" in code
    model = next(text for text in missing if "MOSS-TTSD-v0.5/config.json" in text)
    assert "fnlp/MOSS-TTSD-v0.5" in model
    ckpt = next(text for text in missing if "xy_tokenizer.ckpt" in text)
    assert "fnlp/XY_Tokenizer_TTSD_V0" in ckpt
    assert engine.voices() == []


def test_with_a_gpu_the_packages_then_the_weights_are_what_is_missing(tmp_path: Path) -> None:
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[FAKE_GPU]))
    check_packages_then_weights_are_missing(engine, tmp_path, EXPECTED_PATHS)


def test_ensure_loaded_says_what_is_missing(tmp_path: Path) -> None:
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    check_loading_says_what_is_missing(engine, "moss-ttsd", tmp_path, EXPECTED_PATHS)


def test_dialogue_refuses_before_loading_when_unavailable(tmp_path: Path) -> None:
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    with pytest.raises(EngineUnavailable, match=r"MOSS-TTSD/code/generation_utils\.py"):
        engine.synthesize_dialogue(SCRIPT)


def test_info() -> None:
    info = MossTtsdEngine.info
    assert info.name == "moss-ttsd"
    assert info.sample_rate == 24000
    assert info.languages == ("zh", "en")
    assert info.license == "Apache-2.0"
    assert {c.value for c in info.capabilities} == {"dialogue"}
    assert any(r.kind == "gpu" for r in info.requirements)
    assert info.memory_mb >= 8000


def test_only_the_default_voice() -> None:
    engine = MossTtsdEngine(Path("/nonexistent"), GpuAllocator(devices=[]))
    engine.check_voice("default")
    with pytest.raises(UnknownVoice, match="no named voices"):
        engine.check_voice("af_heart")


# ---- the pure builders ---------------------------------------------------------------------------
def test_parse_turns_reads_tags_and_merges_runs() -> None:
    assert parse_moss_turns(SCRIPT) == [
        (1, "你好，欢迎收听。"),
        (2, "Thanks, glad to be here."),
        (1, "我们开始吧。"),
    ]
    assert parse_moss_turns("S1: Hi there.\nS2：Hello!\n[S2] How are you?") == [
        (1, "Hi there."),
        (2, "Hello! How are you?"),
    ]
    assert parse_moss_turns("[1]One.[2]Two.") == [(1, "One."), (2, "Two.")]
    assert parse_moss_turns("Just one line,\n  no tags.") == [(1, "Just one line, no tags.")]
    assert parse_moss_turns("  ") == []
    with pytest.raises(ValueError, match=r"\[S3\]"):
        parse_moss_turns("[S1]a[S3]b")


def test_format_moss_text() -> None:
    assert format_moss_text([(1, "Hello."), (2, "Hi.")]) == "[S1]Hello.[S2]Hi."


def test_batch_item_for_two_speakers_without_prompts() -> None:
    item = build_batch_item(parse_moss_turns(SCRIPT), None)
    assert item == {"text": "[S1]你好，欢迎收听。[S2]Thanks, glad to be here.[S1]我们开始吧。"}
    assert build_batch_item([(1, "a"), (2, "b")], []) == {"text": "[S1]a[S2]b"}


def test_batch_item_for_two_speakers_with_prompts(tmp_path: Path) -> None:
    prompts = [(tmp_path / "host.wav", "  大家好，我是主持人。 "), (Path("guest.wav"), "Hi, I'm the guest.")]
    item = build_batch_item([(1, "a"), (2, "b")], prompts)
    assert item == {
        "text": "[S1]a[S2]b",
        "prompt_audio_speaker1": str(tmp_path / "host.wav"),
        "prompt_text_speaker1": "大家好，我是主持人。",
        "prompt_audio_speaker2": str(Path("guest.wav").absolute()),  # absolute: no base_path is given
        "prompt_text_speaker2": "Hi, I'm the guest.",
    }
    assert moss_ttsd.prompt_paths(item) == [tmp_path / "host.wav", Path("guest.wav").absolute()]


def test_batch_item_with_one_prompt(tmp_path: Path) -> None:
    clip = tmp_path / "me.wav"
    assert build_batch_item([(1, "Hello.")], [(clip, "My voice.")]) == {
        "text": "[S1]Hello.",
        "prompt_audio": str(clip),
        "prompt_text": "[S1]My voice.",
    }
    # One clip of both speakers: its transcript carries the tags.
    item = build_batch_item([(1, "a"), (2, "b")], [(clip, "[S1]Hi.[S2]Hey.")])
    assert item["prompt_audio"] == str(clip) and item["prompt_text"] == "[S1]Hi.[S2]Hey."
    with pytest.raises(ValueError, match="two speakers"):
        build_batch_item([(1, "a"), (2, "b")], [(clip, "Only me.")])


def test_batch_item_refuses_bad_prompts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="transcript"):
        build_batch_item([(1, "a")], [(tmp_path / "x.wav", " ")])
    with pytest.raises(ValueError, match="at most 2"):
        build_batch_item([(1, "a")], [(tmp_path / "x.wav", "t")] * 3)
    with pytest.raises(ValueError, match="no text"):
        build_batch_item([], None)


def test_attention_falls_back_by_what_is_importable() -> None:
    def importable(name: str) -> object:
        return types.ModuleType(name)

    def missing(name: str) -> object:
        raise ImportError(f"No module named '{name}'")

    def broken(name: str) -> object:
        raise OSError("undefined symbol in flash_attn_2_cuda")

    assert pick_attention(torch, (9, 0), importable) == "flash_attention_2"
    assert pick_attention(torch, None, importable) == "flash_attention_2"
    assert pick_attention(torch, (7, 5), importable) == "sdpa"  # a T4: flash-attn 2 needs Ampere or newer
    assert pick_attention(torch, (9, 0), missing) == "sdpa"
    assert pick_attention(torch, (9, 0), broken) == "sdpa"
    old_torch = types.SimpleNamespace(nn=types.SimpleNamespace(functional=types.SimpleNamespace()))
    assert pick_attention(old_torch, (9, 0), missing) == "eager"
    assert attention_chain("flash_attention_2") == ["flash_attention_2", "sdpa", "eager"]
    assert attention_chain("sdpa") == ["sdpa", "eager"]
    assert attention_chain("eager") == ["eager"]


def test_audio_becomes_mono_float32_at_the_engine_rate() -> None:
    stereo = torch.stack([torch.full((16000,), 0.5), torch.full((16000,), -0.1)])
    out = to_mono_float32(stereo, 24000, 24000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    np.testing.assert_allclose(out, 0.2, atol=1e-6)
    resampled = to_mono_float32(np.full((1, 16000), 2.0), 16000, 24000)
    assert resampled.shape == (24000,) and resampled.max() <= 1.0  # clipped to [-1, 1]
