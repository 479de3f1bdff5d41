"""A tiny random-weight Kokoro model laid out on disk like the real weights, for the tests that run
KokoroTorchEngine (tests/test_kokoro_torch.py, tests/test_workers.py) and bench/bench_workers.py.

The real hexgrad/Kokoro-82M files cannot be downloaded here, so `build_weights` makes a KModel from
the real config.json (shipped in kokoro-onnx, vocab included) shrunk where the architecture lets it,
and saves it the way kokoro-v1_0.pth is saved: submodule name -> DataParallel ("module.") state dict.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import torch

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
# Kokoro's own model code, with the real config too, warns about these.
FILTERWARNINGS = (
    "ignore:dropout option adds dropout:UserWarning",
    "ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning",
)


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


def build_weights(root: Path) -> Path:
    """`root`/Kokoro-82M with the tiny model's kokoro-v1_0.pth, config.json and voices/*.pt; `root`."""
    from kokoro import KModel

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
