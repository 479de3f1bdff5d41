"""MegaTts3Engine without its weights: what it reports and the inputs it builds.

What is tested here: what the engine reports until its environment, code and weights are in place
(the environment to install, every missing path), that loading and cloning refuse with those reasons,
and the pure functions that build MegaTTS3's inputs (latent lookup and shape check, speed and guidance
mapping to `forward()`'s arguments, reference length, 16-bit WAV decoding). Upstream's own
`MegaTTS3DiTInfer` running in the engine's worker, on random weights, is tests/test_megatts3_worker.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from engines.base import EngineState, EngineUnavailable, SynthesisOptions, UnknownVoice
from engines.environment import EngineEnvironment
from engines.gpu import GpuAllocator, GpuDevice
from engines.megatts3 import (
    DEFAULT_DUR_DISTURB,
    DEFAULT_P_W,
    DEFAULT_T_W,
    DEFAULT_TIME_STEP,
    MegaTts3Engine,
    check_latent_file,
    check_latent_shape,
    check_reference_duration,
    clean_text,
    default_latent_path,
    forward_kwargs,
    resolve_latent,
    wav_bytes_to_float32,
)

FAKE_GPU = GpuDevice(0, "Fake GPU", 81920, 81920)
EXPECTED_PATHS = (
    "MegaTTS3/code/tts/infer_cli.py",
    "MegaTTS3/code/tts/utils/text_utils/dict.json",
    "MegaTTS3/checkpoints/diffusion_transformer/config.yaml",
    "MegaTTS3/checkpoints/diffusion_transformer/model_only_last.ckpt",
    "MegaTTS3/checkpoints/aligner_lm/model_only_last.ckpt",
    "MegaTTS3/checkpoints/duration_lm/config.yaml",
    "MegaTTS3/checkpoints/duration_lm/model_only_last.ckpt",
    "MegaTTS3/checkpoints/g2p/config.json",
    "MegaTTS3/checkpoints/g2p/model.safetensors",
    "MegaTTS3/checkpoints/g2p/tokenizer_config.json",
    "MegaTTS3/checkpoints/wavvae/config.yaml",
    "MegaTTS3/checkpoints/wavvae/decoder.ckpt",
)


def write_latent(path: Path, shape: tuple[int, ...] = (1, 50, 32)) -> Path:
    np.save(path, np.zeros(shape, dtype=np.float32))
    return path


# ---- status and load errors ----------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environments from an empty folder: whatever this machine has installed does not count."""
    monkeypatch.setenv("STUDIO_ENGINE_ENVS", str(tmp_path / "no-envs"))


def test_empty_weights_ask_for_its_environment_and_every_path(tmp_path: Path) -> None:
    engine = MegaTts3Engine(tmp_path, GpuAllocator(devices=[]))
    status = engine.status()
    assert status.state == EngineState.NEEDS_ENVIRONMENT
    assert "python -m studio.engines install megatts3" in status.missing[0]
    for relative in EXPECTED_PATHS:
        assert any(str(tmp_path / relative) in text for text in status.missing), relative
    code = next(text for text in status.missing if "infer_cli.py" in text)
    assert "git clone https://github.com/bytedance/MegaTTS3" in code
    ckpt = next(text for text in status.missing if "diffusion_transformer/model_only_last.ckpt" in text)
    assert "huggingface-cli download ByteDance/MegaTTS3" in ckpt
    assert not any("GPU" in text for text in status.missing)  # upstream runs on the CPU too
    assert engine.voices() == []


def test_the_packages_its_code_imports_are_required_in_its_environment() -> None:
    packages = {r.target for r in MegaTts3Engine.info.requirements if r.kind == "package"}
    # infer_cli.py, frontend_function.py and the modules build_model imports, as of the public repository
    assert {
        "torch",
        "transformers",
        "librosa",
        "pydub",
        "pyloudnorm",
        "langdetect",
        "tn",
        "whisper",
    } <= packages
    assert {"einops", "six", "yaml", "ffmpeg"} <= packages
    assert MegaTts3Engine.info.environment == "megatts3"
    pins = EngineEnvironment("megatts3").pins
    assert "openai-whisper==20240930" in pins and "WeTextProcessing==1.0.4.1" in pins


def test_a_full_wavvae_stands_in_for_the_decoder(tmp_path: Path) -> None:
    engine = MegaTts3Engine(tmp_path, GpuAllocator(devices=[]))
    full = tmp_path / "MegaTTS3/checkpoints/wavvae/model_only_last.ckpt"
    full.parent.mkdir(parents=True)
    full.write_bytes(b"")
    assert engine.has_vae_encoder
    missing = engine.status().missing
    assert not any("wavvae/decoder.ckpt" in text for text in missing)
    assert any("wavvae/config.yaml" in text for text in missing)


def test_ensure_loaded_says_what_is_missing(tmp_path: Path) -> None:
    engine = MegaTts3Engine(tmp_path, GpuAllocator(devices=[]))
    with pytest.raises(
        EngineUnavailable, match=r"^megatts3: environment 'megatts3' is not installed"
    ) as raised:
        engine.ensure_loaded()
    assert all(str(tmp_path / relative) in str(raised.value) for relative in EXPECTED_PATHS)
    assert not engine.is_loaded and engine.allocator.leases() == []


def test_clone_refuses_before_loading_when_unavailable(tmp_path: Path) -> None:
    voice = tmp_path / "speaker.wav"
    wavfile.write(voice, 24000, np.zeros(24000, np.int16))
    write_latent(tmp_path / "speaker.npy")
    engine = MegaTts3Engine(tmp_path / "weights", GpuAllocator(devices=[FAKE_GPU]))
    with pytest.raises(EngineUnavailable, match=r"MegaTTS3/code/tts/infer_cli\.py"):
        engine.clone("你好，世界。", voice, None)
    assert engine.allocator.leases() == []


def test_clone_without_a_latent_says_the_encoder_is_not_released(tmp_path: Path) -> None:
    voice = tmp_path / "speaker.wav"
    wavfile.write(voice, 24000, np.zeros(24000, np.int16))
    engine = MegaTts3Engine(tmp_path / "weights", GpuAllocator(devices=[]))
    with pytest.raises(FileNotFoundError) as raised:
        engine.clone("Hello there.", voice, None)
    message = str(raised.value)
    assert "WaveVAE" in message and "encoder" in message and str(tmp_path / "speaker.npy") in message
    assert not engine.is_loaded


def test_clone_checks_its_inputs_before_loading(tmp_path: Path) -> None:
    engine = MegaTts3Engine(tmp_path / "weights", GpuAllocator(devices=[]))
    with pytest.raises(FileNotFoundError, match="reference clip not found"):
        engine.clone("Hello.", tmp_path / "nobody.wav", None)
    with pytest.raises(ValueError, match="empty"):
        engine.clone("  \n ", tmp_path / "nobody.wav", None)
    with pytest.raises(ValueError, match="speaks only zh and en"):
        engine.clone("Hallo.", tmp_path / "nobody.wav", None, SynthesisOptions(language="de"))
    long_clip = tmp_path / "long.wav"
    wavfile.write(long_clip, 16000, np.zeros(16000 * 30, np.int16))
    write_latent(tmp_path / "long.npy")
    with pytest.raises(ValueError, match="at most 28 s"):
        engine.clone("Hello.", long_clip, None)
    clip = tmp_path / "ok.wav"
    wavfile.write(clip, 16000, np.zeros(16000, np.int16))
    write_latent(tmp_path / "ok.npy", (50, 32))
    with pytest.raises(ValueError, match=r"\[1, frames, 32\]"):
        engine.clone("Hello.", clip, None)
    assert engine.allocator.leases() == []


def test_info() -> None:
    info = MegaTts3Engine.info
    assert info.name == "megatts3"
    assert info.sample_rate == 24000
    assert info.languages == ("zh", "en")
    assert info.license == "Apache-2.0"
    assert {c.value for c in info.capabilities} == {
        "clone",
        "tts",
    }  # a clip, or a library voice with a latent
    assert not any(r.kind == "gpu" for r in info.requirements)  # upstream picks the CPU without one
    assert info.memory_mb >= 8000


def test_only_the_reference_voice() -> None:
    engine = MegaTts3Engine(Path("/nonexistent"), GpuAllocator(devices=[]))
    engine.check_voice("reference")
    with pytest.raises(UnknownVoice, match="voice_latent"):
        engine.check_voice("af_heart")


def test_it_speaks_only_library_voices_that_carry_a_latent(tmp_path: Path) -> None:
    clip, latent = tmp_path / "clip.wav", write_latent(tmp_path / "clip.npy")
    wavfile.write(clip, 24000, np.zeros(24000, np.int16))
    library = {"anna": (clip, latent)}
    engine = MegaTts3Engine(tmp_path / "weights", GpuAllocator(devices=[]), library.get)
    engine.check_voice("anna")
    with pytest.raises(UnknownVoice, match="a library voice that carries a latent; 'bob' is neither"):
        engine.check_voice("bob")
    with pytest.raises(UnknownVoice, match="not a library voice with a MegaTTS3 latent"):
        engine._synthesize_timed("Hello.", "reference", SynthesisOptions())
    with pytest.raises(EngineUnavailable, match="environment 'megatts3' is not installed"):
        engine._synthesize_timed("Hello.", "anna", SynthesisOptions())  # checked, then the worker is needed


# ---- the pure helpers ----------------------------------------------------------------------------
def test_clean_text() -> None:
    assert clean_text("  Hello,\n  world. ") == "Hello, world."
    with pytest.raises(ValueError):
        clean_text(" \t\n")


def test_latent_lookup(tmp_path: Path) -> None:
    voice = tmp_path / "A.wav"
    assert default_latent_path(voice) == tmp_path / "A.npy"
    with pytest.raises(FileNotFoundError, match=r"A\.npy"):
        resolve_latent(voice, None, has_vae_encoder=False)
    assert resolve_latent(voice, None, has_vae_encoder=True) is None  # their code encodes the clip itself
    beside = write_latent(tmp_path / "A.npy")
    assert resolve_latent(voice, None, has_vae_encoder=False) == beside
    elsewhere = write_latent(tmp_path / "other.npy")
    assert resolve_latent(voice, elsewhere, has_vae_encoder=False) == elsewhere
    with pytest.raises(FileNotFoundError, match="voice latent not found"):
        resolve_latent(voice, tmp_path / "gone.npy", has_vae_encoder=False)
    with pytest.raises(ValueError, match=r"\.npy"):
        resolve_latent(voice, tmp_path / "A.pt", has_vae_encoder=False)


def test_latent_shape(tmp_path: Path) -> None:
    check_latent_shape((1, 120, 32))
    for bad in [(120, 32), (2, 120, 32), (1, 0, 32), (1, 120, 64)]:
        with pytest.raises(ValueError, match=r"\[1, frames, 32\]"):
            check_latent_shape(bad)
    assert check_latent_file(write_latent(tmp_path / "a.npy", (1, 75, 32))) == (1, 75, 32)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable"):
        check_latent_file(tmp_path / "junk.npy")


def test_reference_duration() -> None:
    check_reference_duration(10.0)
    check_reference_duration(28.0)
    with pytest.raises(ValueError, match="at most 28 s"):
        check_reference_duration(28.5)
    with pytest.raises(ValueError, match="empty"):
        check_reference_duration(0.0)


def test_forward_kwargs_default_to_infer_cli() -> None:
    assert forward_kwargs(SynthesisOptions()) == {
        "time_step": DEFAULT_TIME_STEP,
        "p_w": DEFAULT_P_W,
        "t_w": DEFAULT_T_W,
        "dur_disturb": DEFAULT_DUR_DISTURB,
        "dur_alpha": 1.0,
    }
    assert (DEFAULT_TIME_STEP, DEFAULT_P_W, DEFAULT_T_W, DEFAULT_DUR_DISTURB) == (32, 1.6, 2.5, 0.1)


def test_forward_kwargs_map_speed_and_extras() -> None:
    fast = forward_kwargs(SynthesisOptions(speed=2.0, extra={"p_w": 2, "t_w": 3.0, "time_step": 10}))
    assert fast == {"time_step": 10, "p_w": 2.0, "t_w": 3.0, "dur_disturb": 0.1, "dur_alpha": 0.5}
    assert forward_kwargs(SynthesisOptions(speed=0.8))["dur_alpha"] == pytest.approx(1.25)
    assert forward_kwargs(SynthesisOptions(extra={"dur_disturb": 0}))["dur_disturb"] == 0.0
    bad = [
        SynthesisOptions(speed=0),
        SynthesisOptions(speed=float("nan")),
        SynthesisOptions(extra={"time_step": 0}),
        SynthesisOptions(extra={"time_step": 2.5}),
        SynthesisOptions(extra={"time_step": "32"}),
        SynthesisOptions(extra={"p_w": -1}),
        SynthesisOptions(extra={"t_w": True}),
        SynthesisOptions(extra={"dur_disturb": 1.5}),
    ]
    for options in bad:
        with pytest.raises(ValueError):
            forward_kwargs(options)


def _wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    wavfile.write(buffer, rate, samples)
    return buffer.getvalue()


def test_wav_bytes_become_float32_at_the_engine_rate() -> None:
    pcm = np.array([0, 16384, -16384, 32767, -32768], dtype=np.int16)
    audio = wav_bytes_to_float32(_wav_bytes(pcm, 24000), 24000)
    assert audio.dtype == np.float32
    np.testing.assert_allclose(audio, [0.0, 0.5, -0.5, 32767 / 32768, -1.0], atol=1e-6)
    stereo = np.stack([np.full(100, 16384, np.int16), np.zeros(100, np.int16)], axis=1)
    np.testing.assert_allclose(wav_bytes_to_float32(_wav_bytes(stereo, 24000), 24000), 0.25, atol=1e-6)
    resampled = wav_bytes_to_float32(_wav_bytes(np.zeros(16000, np.int16), 16000), 24000)
    assert resampled.shape == (24000,)
