"""KokoroTorchEngine against a tiny random-weight Kokoro model laid out on disk like the real weights
(tests/kokoro_tiny.py builds it). The engine as the studio runs it speaks from its worker process;
the model's own checks run it in this process (`in_process`: the worker's side of the engine), since
a worker's start is seconds of imports and tests/test_workers.py shows its audio is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import EngineState, SynthesisOptions, UnknownVoice
from engines.gpu import GpuAllocator
from engines.kokoro_torch import KokoroTorchEngine, split_phonemes
from tests.kokoro_tiny import FILTERWARNINGS, LONG_TEXT, SAMPLES_PER_TOKEN, VOICES, build_weights

pytestmark = [pytest.mark.filterwarnings(rule) for rule in FILTERWARNINGS]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def engine(weights_dir: Path) -> Iterator[KokoroTorchEngine]:
    engine = KokoroTorchEngine(weights_dir, GpuAllocator(devices=[]))
    yield engine
    engine.unload()


@pytest.fixture
def model(weights_dir: Path) -> Iterator[KokoroTorchEngine]:
    """The engine as its worker runs it: the model in this process."""
    engine = KokoroTorchEngine(weights_dir, GpuAllocator(devices=[]), in_process=True)
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


def test_weights_come_from_the_file(model: KokoroTorchEngine) -> None:
    # A load that silently skipped the state dicts would leave a fresh random init each time.
    outputs = []
    for _ in range(2):
        model.ensure_loaded()
        torch.manual_seed(0)  # the harmonic source adds random noise (a worker seeds for "seed" in extra)
        outputs.append(np.concatenate([c.audio for c in model.synthesize("Hello world.", "yy_test")]))
        model.unload()
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_british_english_and_no_other_language(model: KokoroTorchEngine) -> None:
    chunks = list(model.synthesize("Good afternoon.", "xx_test", SynthesisOptions(language="en-gb")))
    assert len(chunks) == 1 and len(chunks[0].audio) > 0
    with pytest.raises(ValueError, match="en-us and en-gb"):
        list(model.synthesize("Konnichiwa.", "xx_test", SynthesisOptions(language="ja")))


def test_unknown_voice_lists_the_valid_ones(engine: KokoroTorchEngine) -> None:
    with pytest.raises(UnknownVoice) as raised:
        list(engine.synthesize("Hello.", "af_nobody"))
    for voice in VOICES:
        assert voice in str(raised.value)
    assert not engine.is_loaded


def test_long_sentence_without_punctuation(model: KokoroTorchEngine) -> None:
    chunks = list(model.synthesize(LONG_TEXT, "xx_test"))
    assert len(chunks) > 1
    assert all(len(chunk.audio) > 0 and np.isfinite(chunk.audio).all() for chunk in chunks)


def test_sentence_beyond_the_context_is_split_not_dropped(model: KokoroTorchEngine) -> None:
    # Straight to the model call, past the sentence splitter: some 700 phonemes against a 510 context.
    model.ensure_loaded()
    audio = model._synthesize_sentence(LONG_TEXT[:800], "xx_test", SynthesisOptions())
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert len(audio) > 512 * SAMPLES_PER_TOKEN  # more than one full context holds: nothing was dropped


def test_split_phonemes_cuts_at_words_within_the_limit() -> None:
    phonemes = "ðə kwˈɪk bɹˈWn fˈɑks " * 40
    pieces = split_phonemes(phonemes, 50)
    assert all(0 < len(piece) <= 50 for piece in pieces)
    assert " ".join(pieces) == phonemes.strip()
    assert split_phonemes("a" * 120, 50) == ["a" * 50, "a" * 50, "a" * 20]
    assert split_phonemes("", 50) == []
