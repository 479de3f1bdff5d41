"""MossTtsdEngine's own logic without the model: which version its weights choose, what it reports,
the inputs it builds, and why v0.5 refuses sdpa/eager. The model itself runs in
tests/test_moss_ttsd_v1.py (v1.0 through upstream's classes, tiny random weights, in its worker).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engines import moss_ttsd
from engines.base import EngineState, EngineUnavailable, UnknownVoice
from engines.gpu import GpuAllocator, GpuDevice
from engines.moss_ttsd import (
    MossTtsdEngine,
    build_batch_item,
    format_moss_text,
    parse_moss_turns,
    prefixed_script,
    script_chunks,
    to_mono_float32,
    v05_attention,
)

FAKE_GPU = GpuDevice(0, "Fake GPU", 81920, 81920)
SCRIPT = "[S1]你好，欢迎收听。[S2]Thanks, glad to be here.\n[S1]我们开始吧。"
V1_PATHS = ("MOSS-TTSD/MOSS-TTSD-v1.0/config.json", "MOSS-TTSD/MOSS-Audio-Tokenizer/config.json")
V05_PATHS = (
    "MOSS-TTSD/code/generation_utils.py",
    "MOSS-TTSD/code/XY_Tokenizer/config/xy_tokenizer_config.yaml",
    "MOSS-TTSD/MOSS-TTSD-v0.5/config.json",
    "MOSS-TTSD/XY_Tokenizer/xy_tokenizer.ckpt",
)


@pytest.fixture(autouse=True)
def no_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environments from an empty folder: whatever this machine has installed does not count."""
    monkeypatch.setenv("STUDIO_ENGINE_ENVS", str(tmp_path / "no-envs"))


def place_v05(weights: Path) -> None:
    (weights / "MOSS-TTSD" / "MOSS-TTSD-v0.5").mkdir(parents=True)
    (weights / "MOSS-TTSD" / "MOSS-TTSD-v0.5" / "config.json").write_text("{}")


# ---- status and load errors ----------------------------------------------------------------------
def test_empty_weights_ask_for_v1_its_environment_and_every_path(tmp_path: Path) -> None:
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    assert engine.version == "1.0" and engine.max_speakers == 5
    status = engine.status()
    assert status.state == EngineState.NEEDS_ENVIRONMENT
    assert "python -m studio.engines install moss-ttsd" in status.missing[0]
    for relative in V1_PATHS:
        assert any(str(tmp_path / relative) in text for text in status.missing), relative
    assert any("hf download OpenMOSS-Team/MOSS-TTSD-v1.0" in text for text in status.missing)
    assert not any("GPU" in text for text in status.missing)  # v1.0 runs on the CPU too
    assert engine.voices() == []


def test_v05_weights_choose_v05_which_needs_a_gpu(tmp_path: Path) -> None:
    place_v05(tmp_path)
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    assert engine.version == "0.5" and engine.max_speakers == 2
    missing = engine.status().missing
    assert "environment 'moss-ttsd-v0.5'" in missing[0] and "install moss-ttsd," in missing[0]
    assert any("flash-attention 2 in bf16 on a CUDA GPU" in text for text in missing)
    for relative in V05_PATHS[:2] + V05_PATHS[3:]:
        assert any(str(tmp_path / relative) in text for text in missing), relative
    with_gpu = MossTtsdEngine(tmp_path, GpuAllocator(devices=[FAKE_GPU])).status().missing
    assert not any("GPU" in text for text in with_gpu)


def test_loading_and_dialogue_say_what_is_missing(tmp_path: Path) -> None:
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    with pytest.raises(
        EngineUnavailable, match=r"^moss-ttsd: environment 'moss-ttsd' is not installed"
    ) as raised:
        engine.ensure_loaded()
    assert all(str(tmp_path / relative) in str(raised.value) for relative in V1_PATHS)
    assert not engine.is_loaded and engine.allocator.leases() == []
    with pytest.raises(EngineUnavailable, match=r"MOSS-TTSD-v1\.0/config\.json"):
        engine.synthesize_dialogue(SCRIPT)


def test_dialogue_checks_its_input_before_anything_loads(tmp_path: Path) -> None:
    engine = MossTtsdEngine(tmp_path, GpuAllocator(devices=[]))
    with pytest.raises(ValueError, match=r"5 speakers, \[S1\] to \[S5\]; the script has \[S6\]"):
        engine.synthesize_dialogue("[S1]a[S6]b")
    with pytest.raises(FileNotFoundError, match="reference audio not found"):
        engine.synthesize_dialogue("[S1]a", [(tmp_path / "none.wav", "words")])
    with pytest.raises(ValueError, match="not xx"):
        engine.synthesize_dialogue("[S1]a", options=moss_ttsd.SynthesisOptions(language="xx"))
    place_v05(tmp_path)
    with pytest.raises(ValueError, match=r"2 speakers.*\[S3\]"):
        engine.synthesize_dialogue("[S1]a[S3]b")


def test_info() -> None:
    info = MossTtsdEngine.info
    assert info.name == "moss-ttsd"
    assert info.sample_rate == 24000
    assert {"zh", "en", "ja"} <= set(info.languages) and len(info.languages) == 20
    assert info.license == "Apache-2.0"
    assert {c.value for c in info.capabilities} == {"dialogue"}
    assert info.environment == "moss-ttsd"
    assert info.memory_mb >= 8000


def test_only_the_default_voice() -> None:
    engine = MossTtsdEngine(Path("/nonexistent"), GpuAllocator(devices=[]))
    engine.check_voice("default")
    with pytest.raises(UnknownVoice, match="no named voices"):
        engine.check_voice("af_heart")


def test_v05_attention_is_flash_or_a_clear_message() -> None:
    assert v05_attention(None, flash_importable=True, on_cuda=True) == "flash_attention_2"
    assert v05_attention("flash_attention_2", True, True) == "flash_attention_2"
    for asked in ("sdpa", "eager"):
        with pytest.raises(EngineUnavailable) as raised:
            v05_attention(asked, True, True)
        message = str(raised.value)
        assert "crashes under sdpa and eager" in message and "cache_position" in message
        assert f"STUDIO_MOSS_ATTENTION={asked}" in message and "MOSS-TTSD v1.0" in message
    with pytest.raises(EngineUnavailable, match="no CUDA GPU"):
        v05_attention(None, True, False)
    with pytest.raises(EngineUnavailable, match="flash-attn does not import"):
        v05_attention(None, False, True)


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
    assert [speaker for speaker, _ in parse_moss_turns("[S1]a[S2]b[S3]c[S4]d[S5]e")] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"\[S3\]"):
        parse_moss_turns("[S1]a[S3]b", max_speakers=2)


def test_chunks_are_whole_turns_and_the_prefix_is_each_reference_transcript() -> None:
    turns = [(1, "a" * 600), (2, "b" * 600), (3, "c" * 600), (1, "d" * 2000)]
    chunks = script_chunks(turns, max_chars=1500)
    assert chunks == [turns[:2], turns[2:3], turns[3:]]
    assert [turn for chunk in chunks for turn in chunk] == turns
    assert prefixed_script([(1, "Hi."), (2, "Yo.")], ["I am one.", " I  am two. "]) == (
        "[S1]I am one.[S2]I am two.[S1]Hi.[S2]Yo."
    )
    assert prefixed_script([(2, "Yo."), (1, "Hi.")], ["I am one.", "I am two."]) == (
        "[S1]I am one.[S2]I am two. Yo.[S1]Hi."
    )


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


def test_audio_becomes_mono_float32_at_the_engine_rate() -> None:
    stereo = torch.stack([torch.full((16000,), 0.5), torch.full((16000,), -0.1)])
    out = to_mono_float32(stereo, 24000, 24000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    np.testing.assert_allclose(out, 0.2, atol=1e-6)
    resampled = to_mono_float32(np.full((1, 16000), 2.0), 16000, 24000)
    assert resampled.shape == (24000,) and resampled.max() <= 1.0  # clipped to [-1, 1]


def test_v05_items_go_to_upstream_with_audio_loaded_and_an_explicit_no_prompt(tmp_path: Path) -> None:
    """What upstream's process_batch can take (tests/test_moss_ttsd_v05.py shows why): no prompt is
    prompt_audio None, and clips arrive as torchaudio.load's (wav [channels, T], rate)."""
    from engines.moss_ttsd import _with_prompt_audio

    bare = _with_prompt_audio(build_batch_item([(1, "a"), (2, "b")]))
    assert bare == {"text": "[S1]a[S2]b", "prompt_audio": None, "prompt_text": ""}
    clips = []
    for n in (1, 2):
        clip = tmp_path / f"s{n}.wav"
        sf.write(clip, np.full((800 * n, 2), 0.25, np.float32), 16000)  # stereo: channels stay
        clips.append((clip, f"speaker {n}"))
    item = _with_prompt_audio(build_batch_item([(1, "a"), (2, "b")], clips))
    for n in (1, 2):
        wav, rate = item[f"prompt_audio_speaker{n}"]
        assert rate == 16000 and tuple(wav.shape) == (2, 800 * n) and wav.dtype == torch.float32
        assert item[f"prompt_text_speaker{n}"] == f"speaker {n}"
    assert "prompt_audio" not in item
