"""MOSS-TTSD v0.5 as far as its upstream code goes on the CPU: tiny random weights built with upstream's
own classes in the studio's layout (tests/moss_v05_tiny.py), run inside the engine's own pinned v0.5
environment (installed here for real when it is not yet: ~2.5 min, ~7.4 GB), then the studio's adapter
refusing it with its own message before any of that runs.

What upstream v0.5 does on a CPU (torch 2.9.1, transformers 4.53.2), every call its own, no stand-in:
- XY_Tokenizer loads from its checkpoint and yaml, and encodes and decodes on the CPU when given
  device="cpu" (both default to cuda): 12.5 code frames a second, 8 codes a frame, 1920 samples of
  24 kHz audio out per frame.
- generation_utils.load_model stops at AsteroidTTSInstruct.from_pretrained(..., "flash_attention_2").
- Past it, upstream's class loads with sdpa or eager attention and runs a forward pass, but its
  sampling loop crashes in its first step: it trims the prompt by channels - 1 = 7 rows yet builds
  cache_position from the untrimmed length (N - 7 vs N), the crash the adapter's message names.
- Upstream's process_batch reaches generate() only for an item whose prompt_audio is None: without
  prompt keys it loads prompt audio "" (so a script with no prompt audio cannot run), prompt files go
  through torchaudio.load (on torchaudio 2.9 that needs torchcodec), and any prompt audio is encoded by
  spt.encode on its default device, cuda.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from engines.base import EngineState, EngineUnavailable
from engines.environment import EngineEnvironment
from engines.gpu import GpuAllocator, GpuDevice
from engines.moss_ttsd import (
    MODEL,
    TOKENIZER,
    TOKENIZER_CHECKPOINT,
    MossTtsdEngine,
    build_batch_item,
    parse_moss_turns,
    v05_attention,
)
from tests.engine_checks import ready

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream"
CODE = UPSTREAM / "MOSS-TTSD-v0.5"
pytestmark = pytest.mark.skipif(
    not (CODE / "generation_utils.py").is_file(),
    reason=f"MOSS-TTSD v0.5's upstream code is not at {CODE}",
)
IMPORTS = ["torch", "transformers", "yaml", "einops", "liger_kernel"]
SCRIPT = "[S1]Hello, welcome to the show.[S2]Thanks, glad to be here."
FLASH_MESSAGE = (
    "FlashAttention2 has been toggled on, but it cannot be used due to the following error: "
    "the package flash_attn seems to be not installed."
)
LOAD_LINE = (
    "generation_utils.py:load_model: model = AsteroidTTSInstruct.from_pretrained(model_path, "
    'torch_dtype=torch.bfloat16, attn_implementation="flash_attention_2")'
)
NO_DRIVER = "Found no NVIDIA driver on your system"


def _run_env(environment: EngineEnvironment, *args: str, pythonpath: str = "") -> str:
    """A script on the v0.5 environment's interpreter; its last stdout line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": pythonpath}
    out = subprocess.run(
        [environment.python() or "", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def environment() -> EngineEnvironment:
    """moss-ttsd-v0.5's environment, installed from the registries unless it is ready (reused after)."""
    return ready(EngineEnvironment("moss-ttsd-v0.5", imports=IMPORTS))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, environment: EngineEnvironment) -> dict[str, Any]:
    """The tiny v0.5 layout under a weights folder, and what upstream did with it (moss_v05_tiny.py).

    The process_batch items include the two JSONL-form items build_batch_item makes (a script without
    prompts, one with a prompt clip per speaker): raw, they fail in upstream's loading, which is why the
    adapter hands them over as `_with_prompt_audio` makes them (prompt_audio None, (wav, sr) tuples:
    the "null_prompt" and "prompt_tuples" cases, which get further)."""
    weights = tmp_path_factory.mktemp("moss-v05-weights")
    clips = []
    for n in (1, 2):
        clip = weights / f"speaker{n}.wav"
        sf.write(clip, 0.1 * np.sin(np.arange(16000) * 0.05 * n), 16000)
        clips.append((clip, f"I am speaker {n}."))
    turns = parse_moss_turns(SCRIPT, 2)
    items = {"adapter_no_prompt": build_batch_item(turns), "adapter_prompts": build_batch_item(turns, clips)}
    items_file = weights / "items.json"
    items_file.write_text(json.dumps(items), encoding="utf-8")
    builder = [str(ROOT / "tests" / "moss_v05_tiny.py"), str(weights), "--upstream", str(UPSTREAM)]
    facts = json.loads(_run_env(environment, *builder, "--items", str(items_file)))
    return {**facts, "weights": weights, "items": items}


# ---- XY_Tokenizer --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_tiny_weights_are_upstreams_own_in_the_adapters_layout(tiny: dict[str, Any]) -> None:
    weights = tiny["weights"]
    assert tiny["transformers"] == "4.53.2" and tiny["torch"].startswith("2.9.1")
    assert tiny["tokenizer_config"]["same_keys"]  # every key of upstream's yaml, only sizes changed
    assert (weights / TOKENIZER_CHECKPOINT).is_file()
    assert (weights / TOKENIZER / "xy_tokenizer_config.yaml").is_file()
    assert (weights / MODEL / "config.json").is_file() and (weights / MODEL / "model.safetensors").is_file()
    assert (weights / "MOSS-TTSD" / "code").resolve() == CODE.resolve()
    # every upstream module came from the code folder, as the adapter puts it on sys.path
    assert set(tiny["modules_from"]) == {
        "generation_utils",
        "modeling_asteroid",
        "XY_Tokenizer.xy_tokenizer.model",
    }
    code = str(weights / "MOSS-TTSD" / "code")
    assert all(folder.startswith(code) for folder in tiny["modules_from"].values())


def test_xy_tokenizer_loads_and_round_trips_a_clip_on_the_cpu(tiny: dict[str, Any]) -> None:
    codec = tiny["codec"]
    assert codec["class"] == "XY_Tokenizer.xy_tokenizer.model.XY_Tokenizer"
    assert codec["same_weights"]  # load_from_checkpoint gave back exactly the saved state dict
    assert (codec["input_sample_rate"], codec["output_sample_rate"]) == (16000, 24000)
    # 1280 input samples a frame in, 1920 output samples a frame out: 12.5 frames a second both ways.
    assert codec["encoder_downsample_rate"] == 1280 and codec["decoder_upsample_rate"] == 1920
    assert 16000 / 1280 == 24000 / 1920 == 12.5
    assert codec["nq"] == tiny["max_channels"] == 8  # one code channel per model channel
    for clip in codec["clips"]:
        frames = clip["samples"] // 1280  # whole frames only: 1.5 s -> 18, 2.5 s -> 31
        assert clip["codes_shape"] == [8, frames], clip
        assert clip["codes_dtype"] == "torch.int64" and clip["codes_device"] == "cpu"
        assert 0 <= clip["codes_range"][0] <= clip["codes_range"][1] < 1024  # 1024 codes, 1024 is the pad
        assert clip["decoded_samples"] == frames * 1920  # 24 kHz: the clip's whole frames, resampled
        assert clip["decoded_finite"] and clip["decoded_rms"] > 0
    assert [c["codes_shape"][1] for c in codec["clips"]] == [18, 31]


def test_xy_tokenizer_defaults_to_cuda(tiny: dict[str, Any]) -> None:
    """encode/decode default to device=cuda: on a machine without a GPU they fail unless told "cpu"."""
    codec = tiny["codec"]
    assert codec["encode_defaults"] == {"encode": "cuda", "decode": "cuda"}
    if "encode_default_device" not in codec:
        pytest.skip("the v0.5 environment sees a CUDA GPU here")
    failed = codec["encode_default_device"]
    assert failed["type"] == "RuntimeError" and NO_DRIVER in failed["message"]
    assert failed["upstream_lines"] == [
        "model.py:encode: wav_tensor = torch.zeros(batch_size, 1, max_length, device=device)"
    ]


# ---- the model -----------------------------------------------------------------------------------------
def test_upstream_load_model_stops_at_flash_attention_2_on_the_cpu(tiny: dict[str, Any]) -> None:
    loaded = tiny["load_model"]
    assert loaded["signature"] == ["model_path", "spt_config_path", "spt_checkpoint_path"]
    if loaded["flash_attn_importable"]:
        pytest.skip("flash-attn is installed in the v0.5 environment here")
    failed = loaded["result"]
    assert failed["type"] == "ImportError" and failed["message"].startswith(FLASH_MESSAGE)
    assert failed["raised_in"] == "modeling_utils.py:_check_and_enable_flash_attn_2"
    # its tokenizer loaded (the line before); the model's hard-coded flash_attention_2 is where it stops
    assert failed["upstream_lines"] == [LOAD_LINE]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_past_load_model_the_sampling_loop_crashes_in_its_first_step(
    tiny: dict[str, Any], attention: str
) -> None:
    """Upstream's class loads with sdpa/eager in float32 and a forward pass works; generate() on the
    input process_batch builds does not: _sample trims the prompt by 7 rows, not cache_position."""
    past = tiny["past_load_model"]
    batch, rows, channels = past["input_ids_shape"]
    assert batch == 1 and channels == 8
    one = past[attention]
    assert one["attn_implementation"] == attention
    assert one["forward_logits"] == [[1, rows, 152697]] + [[1, rows, 1025]] * 7  # text head + 7 code heads
    crash = one["generate"]
    assert crash["type"] == "RuntimeError"
    assert crash["message"].startswith(
        f"The size of tensor a ({rows - 7}) must match the size of tensor b ({rows})"
    ), crash
    assert (
        crash["upstream_lines"][0]
        == "modeling_asteroid.py:_sample: outputs = self(**model_inputs, return_dict=True)"
    )
    raised_in = {
        "sdpa": "sdpa_attention.py:sdpa_attention_forward",
        "eager": "modeling_qwen3.py:eager_attention_forward",
    }
    assert crash["raised_in"] == raised_in[attention]


def test_process_batch_reaches_generate_only_with_prompt_audio_none(tiny: dict[str, Any]) -> None:
    past = tiny["past_load_model"]
    rows = past["input_ids_shape"][1]
    reached = past["null_prompt"]
    assert reached["upstream_lines"][0] == "generation_utils.py:process_batch: outputs = model.generate("
    assert reached["message"].startswith(
        f"The size of tensor a ({rows - 7}) must match the size of tensor b ({rows})"
    )

    # Without prompt keys, upstream fills in two empty prompt paths and loads the first one: "".
    assert past["processed_no_prompt"]["prompt_audio"] == {"speaker1": "", "speaker2": ""}
    load_line = "generation_utils.py:_load_single_audio: wav, sr = torchaudio.load(audio_input)"
    for name in ("no_prompt", "adapter_no_prompt"):
        assert past[name]["upstream_lines"][-1] == load_line, (name, past[name])

    # Prompt files go through torchaudio.load; torchaudio 2.9 hands that to torchcodec.
    for name in ("prompt_files", "adapter_prompts"):
        failed = past[name]
        if tiny["torchcodec"]:  # then the audio loads, and spt.encode wants cuda (below)
            assert failed["upstream_lines"][-1].startswith("model.py:encode:"), (name, failed)
        else:
            assert failed["type"] == "ImportError" and "TorchCodec is required" in failed["message"]
            assert failed["upstream_lines"][-1] == load_line, (name, failed)

    # (wav, sr) tuples skip torchaudio.load; then process_inputs calls spt.encode without a device.
    if tiny["load_model"]["cuda"]:
        return  # the rest is what a machine without a GPU does
    encoded = past["prompt_tuples"]
    assert NO_DRIVER in encoded["message"]
    assert encoded["upstream_lines"][-2:] == [
        "generation_utils.py:process_inputs: encode_result = spt.encode([wav.squeeze().to(device)])",
        "model.py:encode: wav_tensor = torch.zeros(batch_size, 1, max_length, device=device)",
    ]


# ---- the studio's adapter ------------------------------------------------------------------------------
def test_the_adapter_sees_v05_and_refuses_it_without_a_gpu(
    tiny: dict[str, Any], environment: EngineEnvironment
) -> None:
    """In the studio's process: this layout is v0.5, its environment is ready, and the one thing
    missing is the GPU; loading says so before anything of upstream's runs."""
    weights = tiny["weights"]
    engine = MossTtsdEngine(weights, GpuAllocator([]))
    assert engine.version == "0.5" and engine.max_speakers == 2
    assert engine.code_dir.resolve() == CODE.resolve()
    assert engine.tokenizer_config == weights / TOKENIZER / "xy_tokenizer_config.yaml"  # next to the ckpt
    own = engine.environment()
    assert own is not None and own.name == environment.name and own.python() == environment.python()
    status = engine.status()
    assert status.state == EngineState.NEEDS_GPU
    gpu = "needs a CUDA GPU (MOSS-TTSD v0.5 runs with flash-attention 2 in bf16 on a CUDA GPU only)"
    assert status.missing == (gpu,)
    imported = set(sys.modules)
    with pytest.raises(EngineUnavailable, match=r"^moss-ttsd: needs a CUDA GPU \(MOSS-TTSD v0\.5"):
        engine.ensure_loaded()
    assert engine.worker is None and not engine.is_loaded and engine.allocator.leases() == []
    assert not {"torch", "generation_utils", "modeling_asteroid"} & (set(sys.modules) - imported)

    if tiny["load_model"]["cuda"]:
        return  # the rest is about a machine without a GPU
    # A GPU the studio sees but the worker does not: the worker refuses the same way, and the lease ends.
    booked = MossTtsdEngine(weights, GpuAllocator([GpuDevice(0, "Fake GPU", 81920, 81920)]))
    assert booked.status().state == EngineState.READY
    with pytest.raises(EngineUnavailable, match=r"needs a CUDA GPU \(MOSS-TTSD v0\.5"):
        booked.ensure_loaded()
    assert booked.worker is None and booked.allocator.leases() == []


def test_the_adapters_attention_messages_name_what_upstream_does(tiny: dict[str, Any]) -> None:
    rows = tiny["past_load_model"]["input_ids_shape"][1]
    for asked in ("sdpa", "eager"):  # what the sampling-loop test shows upstream doing
        with pytest.raises(EngineUnavailable) as raised:
            v05_attention(asked, flash_importable=True, on_cuda=True)
        message = str(raised.value)
        assert "crashes under sdpa and eager" in message and "cache_position" in message
        assert f"STUDIO_MOSS_ATTENTION={asked} cannot work" in message
        assert f"({rows - 7})" in tiny["past_load_model"][asked]["generate"]["message"]
    with pytest.raises(EngineUnavailable, match=r"this worker has no CUDA GPU\. Place MOSS-TTSD v1\.0"):
        v05_attention(None, flash_importable=False, on_cuda=False)
    with pytest.raises(
        EngineUnavailable, match=r"flash-attn does not import in its environment \(pip install"
    ):
        v05_attention(None, flash_importable=False, on_cuda=True)
    assert v05_attention(None, flash_importable=True, on_cuda=True) == "flash_attention_2"


ADAPTER_LOAD = """
import json, sys, traceback
from pathlib import Path
from engines import moss_ttsd
from engines.gpu import GpuAllocator

moss_ttsd.v05_attention = lambda requested, flash_importable, on_cuda: "flash_attention_2"  # the GPU gate
engine = moss_ttsd.MossTtsdEngine(Path(sys.argv[1]), GpuAllocator([]), in_process=True)
try:
    engine._load_model()
    print(json.dumps({"loaded": True}))
except Exception as error:
    frames = traceback.extract_tb(error.__traceback__)
    lines = [f"{Path(f.filename).name}:{f.name}: {f.line}" for f in frames]
    print(json.dumps({"type": type(error).__name__, "message": str(error), "lines": lines}))
"""


def test_the_adapters_own_load_reaches_upstreams_load_model(
    tiny: dict[str, Any], environment: EngineEnvironment
) -> None:
    """The adapter's _load_v05, in the v0.5 environment with only its GPU/flash-attn gate passed (the
    one shim here): it calls upstream's load_model the way that load_model takes (three paths), and
    stops exactly where upstream's own call does on this CPU."""
    pythonpath = str(ROOT)
    result = json.loads(
        _run_env(environment, "-c", ADAPTER_LOAD, str(tiny["weights"]), pythonpath=pythonpath)
    )
    assert result.get("type") == "ImportError", result
    assert result["message"].startswith(FLASH_MESSAGE)
    names = [line.split(": ", 1)[0] for line in result["lines"]]
    assert names[1:4] == [
        "moss_ttsd.py:_load_model",
        "moss_ttsd.py:_load_v05",
        "generation_utils.py:load_model",
    ]
    assert LOAD_LINE in result["lines"]
