"""KokoroTorchEngine against a tiny random-weight Kokoro model laid out on disk like the real weights.

The real hexgrad/Kokoro-82M files cannot be downloaded here, so the fixture builds a KModel from
the real config.json (shipped in kokoro-onnx, vocab included) shrunk where the architecture lets it,
and saves it the way kokoro-v1_0.pth is saved: submodule name -> DataParallel ("module.") state dict.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import EngineState, SynthesisOptions, UnknownVoice
from engines.gpu import GpuAllocator
from engines.kokoro_torch import KokoroTorchEngine, split_phonemes

pytestmark = [  # kokoro's own model code, with the real config too
    pytest.mark.filterwarnings("ignore:dropout option adds dropout:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning"),
]

# hidden_dim 512, style_dim 128 and upsample_initial_channel 512 are hard-coded inside kokoro's
# modules, so those stay real; the rest shrinks. max_dur 1 makes every token exactly one frame.
TINY = {
    "plbert": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32, "num_hidden_layers": 1},
    "n_layer": 1,
    "max_dur": 1,
    "text_encoder_kernel_size": 3,
    "istftnet": {
        "upsample_kernel_sizes": [4, 4],
        "upsample_rates": [2, 2],
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3, 5]],
    },
}
# With TINY, one model call on n phoneme symbols gives (n + 2 pad tokens) * 2 F0 frames * 2*2*5 samples.
SAMPLES_PER_TOKEN = 40
VOICES = ("xx_test", "yy_test")
LONG_TEXT = ("the quick brown fox jumps over the lazy dog while seven happy children watch " * 30)[:2000]


def tiny_config() -> dict:
    real = importlib.resources.files("kokoro_onnx") / "config.json"  # Kokoro-82M v1.0's own config.json
    config = json.loads(real.read_text(encoding="utf-8"))
    assert {"vocab", "n_token", "plbert", "hidden_dim", "style_dim", "istftnet"} <= config.keys()
    for key, value in TINY.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kokoro import KModel

    root = tmp_path_factory.mktemp("weights")
    folder = root / "Kokoro-82M"
    (folder / "voices").mkdir(parents=True)
    config = tiny_config()
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    torch.manual_seed(1234)
    empty = root / "empty.pth"
    torch.save({}, empty)  # no state to load: KModel keeps its random init
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(empty))
    empty.unlink()
    state = {
        name: {f"module.{key}": value for key, value in getattr(model, name).state_dict().items()}
        for name in ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    }
    torch.save(state, folder / "kokoro-v1_0.pth")
    for voice in VOICES:
        torch.save(torch.randn(510, 1, 2 * config["style_dim"]) * 0.5, folder / "voices" / f"{voice}.pt")
    return root


@pytest.fixture
def engine(weights_dir: Path) -> Iterator[KokoroTorchEngine]:
    engine = KokoroTorchEngine(weights_dir, GpuAllocator(devices=[]))
    yield engine
    engine.unload()


def test_empty_weights_folder_needs_weights(tmp_path: Path) -> None:
    engine = KokoroTorchEngine(tmp_path, GpuAllocator(devices=[]))
    status = engine.status()
    assert status.state == EngineState.NEEDS_WEIGHTS
    pth = next(text for text in status.missing if "kokoro-v1_0.pth" in text)
    assert str(tmp_path / "Kokoro-82M" / "kokoro-v1_0.pth") in pth
    assert "hexgrad/Kokoro-82M" in pth
    assert engine.voices() == []


def test_voices_are_the_packs_in_the_folder(engine: KokoroTorchEngine) -> None:
    assert [voice.id for voice in engine.voices()] == list(VOICES)
    assert not engine.is_loaded


def test_loads_lazily_and_speaks_sentence_by_sentence(engine: KokoroTorchEngine) -> None:
    assert engine.status().state == EngineState.READY
    assert not engine.is_loaded
    chunks = list(engine.synthesize("Hello world. This is a test.", "xx_test"))
    assert [chunk.text for chunk in chunks] == ["Hello world.", "This is a test."]
    for chunk in chunks:
        assert chunk.sample_rate == 24000
        assert chunk.audio.dtype == np.float32
        assert chunk.audio.ndim == 1 and len(chunk.audio) > 0
        assert np.isfinite(chunk.audio).all()
        assert np.abs(chunk.audio).max() > 0
        assert len(chunk.audio) % SAMPLES_PER_TOKEN == 0
    assert engine.is_loaded
    assert engine.status().state == EngineState.LOADED
    engine.unload()
    assert not engine.is_loaded
    assert engine.status().state == EngineState.READY


def test_weights_come_from_the_file(engine: KokoroTorchEngine) -> None:
    # A load that silently skipped the state dicts would leave a fresh random init each time.
    outputs = []
    for _ in range(2):
        engine.ensure_loaded()
        torch.manual_seed(0)  # the harmonic source adds random noise
        outputs.append(np.concatenate([c.audio for c in engine.synthesize("Hello world.", "yy_test")]))
        engine.unload()
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_british_english_and_no_other_language(engine: KokoroTorchEngine) -> None:
    chunks = list(engine.synthesize("Good afternoon.", "xx_test", SynthesisOptions(language="en-gb")))
    assert len(chunks) == 1 and len(chunks[0].audio) > 0
    with pytest.raises(ValueError, match="en-us and en-gb"):
        list(engine.synthesize("Konnichiwa.", "xx_test", SynthesisOptions(language="ja")))


def test_unknown_voice_lists_the_valid_ones(engine: KokoroTorchEngine) -> None:
    with pytest.raises(UnknownVoice) as raised:
        list(engine.synthesize("Hello.", "af_nobody"))
    for voice in VOICES:
        assert voice in str(raised.value)
    assert not engine.is_loaded


def test_long_sentence_without_punctuation(engine: KokoroTorchEngine) -> None:
    chunks = list(engine.synthesize(LONG_TEXT, "xx_test"))
    assert len(chunks) > 1
    assert all(len(chunk.audio) > 0 and np.isfinite(chunk.audio).all() for chunk in chunks)


def test_sentence_beyond_the_context_is_split_not_dropped(engine: KokoroTorchEngine) -> None:
    # Straight to the model call, past the sentence splitter: some 700 phonemes against a 510 context.
    engine.ensure_loaded()
    audio = engine._synthesize_sentence(LONG_TEXT[:800], "xx_test", SynthesisOptions())
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert len(audio) > 512 * SAMPLES_PER_TOKEN  # more than one full context holds: nothing was dropped


def test_split_phonemes_cuts_at_words_within_the_limit() -> None:
    phonemes = "ðə kwˈɪk bɹˈWn fˈɑks " * 40
    pieces = split_phonemes(phonemes, 50)
    assert all(0 < len(piece) <= 50 for piece in pieces)
    assert " ".join(pieces) == phonemes.strip()
    assert split_phonemes("a" * 120, 50) == ["a" * 50, "a" * 50, "a" * 20]
    assert split_phonemes("", 50) == []
