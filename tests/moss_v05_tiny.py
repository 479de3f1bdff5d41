"""Tiny random-weight MOSS-TTSD v0.5 weights in the studio's layout, built with upstream's own classes,
and how far upstream's v0.5 code goes with them on the CPU.

    HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 <moss-ttsd-v0.5 env python> tests/moss_v05_tiny.py \\
        WEIGHTS_DIR [--upstream DIR] [--items ITEMS.json]

Runs inside the engine's v0.5 environment (engines/envs/moss-ttsd-v0.5.txt: torch 2.9.1,
transformers 4.53.2); it imports nothing from the studio. DIR is a folder holding MOSS-TTSD-v0.5 (the
MOSS-TTSD repository at its v0.5 release, unchanged; default /work/shared/upstream or $MOSS_UPSTREAM).
WEIGHTS_DIR/MOSS-TTSD/code becomes a symlink to it, and that folder is put on sys.path as the adapter
(engines/moss_ttsd.py) does with its code folder, so every class and function below is upstream's,
imported from there. It writes

  WEIGHTS_DIR/MOSS-TTSD/code                   -> DIR/MOSS-TTSD-v0.5
  WEIGHTS_DIR/MOSS-TTSD/XY_Tokenizer/xy_tokenizer.ckpt         a tiny XY_Tokenizer's state dict
  WEIGHTS_DIR/MOSS-TTSD/XY_Tokenizer/xy_tokenizer_config.yaml  upstream's yaml, same keys, small sizes
  WEIGHTS_DIR/MOSS-TTSD/MOSS-TTSD-v0.5/        a tiny AsteroidTTSInstruct (save_pretrained: config.json,
                                               generation_config.json, model.safetensors) + tokenizer

then runs, and prints one JSON line of what happened (`run(weights_dir, upstream, items)` returns it):

1. XY_Tokenizer.load_from_checkpoint(config_path=<the yaml>, ckpt_path=<the ckpt>), then its encode
   and decode on two clips with device="cpu" (both default to cuda; the call without a device is
   tried too, to record what that does here).
2. generation_utils.load_model(model folder, yaml, ckpt) as upstream's inference.py calls it: on this
   CPU it stops at AsteroidTTSInstruct.from_pretrained(..., attn_implementation="flash_attention_2").
3. As far as upstream goes past that: the same upstream class loaded with sdpa and with eager attention
   in float32 (what load_model does not allow), one forward pass over the prompt, then generate() on
   the input process_batch builds (upstream's process_inputs, shifting_inputs, rpadding): its sampling
   loop (CustomMixin._sample) crashes in its first step. Then upstream's process_batch itself (with the
   sdpa model) on one script: without prompt keys, with prompt_audio None, with prompt files and with
   (wav, sr) prompt tuples; only prompt_audio None gets as far as generate(), which crashes the same way.
   ITEMS.json (a JSON object, name -> item) adds items to run the same way: the test passes the ones the
   studio's adapter builds.

Sizes. XY_Tokenizer: every rate and stride of upstream's yaml kept (16 kHz in, 24 kHz out, hop 160,
conv stride 2, 4x down/up sampling, 8 quantizers of 1024 codes, Vocos n_fft 960 hop 240, 30 s windows),
so 1280 input samples make one code frame and one frame decodes to 1920 samples; model widths cut to
32 (1 layer, 2 heads), rvq/codebook dim 16 (= each other, as in upstream's yaml). The codebooks are
random and marked initialised (a fresh VectorQuantize has an all-zero codebook, which its first forward
"initialises" by k-means only under torch.distributed, else with zeros again). AsteroidTTSInstruct:
Qwen3 backbone 2 layers, hidden 32, 4 heads / 2 kv heads, head_dim 8, vocab 152697 (channel 0 holds
text ids and speech codes at 151665 + code; the sampling loop indexes logit 152694), channels 8, speech
vocab 1025 (pad 1024); saved as upstream's config says, torch_dtype bfloat16. generation_config.json
carries the per-channel sampling upstream's _sample reads (do_samples, layers: our values; without them
it fails on the missing attribute) and max_new_tokens 8. Tokenizer: byte-level BPE trained on a few
sentences plus the special tokens upstream's prompt uses (<|begin_of_style|>, ..., <speaker1>,
<speaker2>); pad <|endoftext|>.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # the upstream folder is shared: no __pycache__ there

import torch  # noqa: E402
import yaml  # noqa: E402

UPSTREAM = Path(os.environ.get("MOSS_UPSTREAM", "/work/shared/upstream"))
FOLDER = Path("MOSS-TTSD")
CODE = FOLDER / "code"
MODEL = FOLDER / "MOSS-TTSD-v0.5"
TOKENIZER = FOLDER / "XY_Tokenizer"
CHECKPOINT = TOKENIZER / "xy_tokenizer.ckpt"
TOKENIZER_CONFIG = TOKENIZER / "xy_tokenizer_config.yaml"
UPSTREAM_YAML = Path("XY_Tokenizer") / "config" / "xy_tokenizer_config.yaml"

CLIPS = (24000, 40000)  # samples at 16 kHz: 1.5 s and 2.5 s, neither a whole number of 1280-sample frames
SCRIPT = "[S1]Hello, welcome to the show.[S2]Thanks, glad to be here."
SYSTEM_PROMPT = (
    "You are a speech synthesizer that generates natural, realistic, and human-like conversational audio "
    "from dialogue text."
)
SPECIAL = (
    "<|endoftext|>",
    "<|begin_of_style|>",
    "<|end_of_style|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|begin_of_speech|>",
    "<|end_of_speech|>",
    "<speaker1>",
    "<speaker2>",
)
CORPUS = [
    SYSTEM_PROMPT,
    "Hello, welcome to the show. Thanks, glad to be here. Let us get started then.",
    "你好，欢迎收听。我们开始吧。",
]

# Upstream's yaml, shrunk: only widths, depths and head counts change (keys and rates stay).
WIDTH, HEADS, FFN, LAYERS, RVQ = 32, 2, 64, 1, 16
SHRINK: dict[str, dict[str, int]] = {
    "semantic_encoder_kwargs": {
        "d_model": WIDTH,
        "encoder_layers": LAYERS,
        "encoder_attention_heads": HEADS,
        "encoder_ffn_dim": FFN,
    },
    "semantic_encoder_adapter_kwargs": {
        "input_dim": WIDTH,
        "output_dim": WIDTH,
        "d_model": WIDTH,
        "encoder_layers": LAYERS,
        "encoder_attention_heads": HEADS,
        "encoder_ffn_dim": FFN,
    },
    "acoustic_encoder_kwargs": {
        "d_model": WIDTH,
        "encoder_layers": LAYERS,
        "encoder_attention_heads": HEADS,
        "encoder_ffn_dim": FFN,
    },
    "pre_rvq_adapter_kwargs": {
        "input_dim": 2 * WIDTH,  # semantic adapter output + acoustic encoder output, concatenated
        "output_dim": WIDTH,
        "d_model": WIDTH,
        "encoder_layers": LAYERS,
        "encoder_attention_heads": HEADS,
        "encoder_ffn_dim": FFN,
    },
    "downsample_kwargs": {"d_model": WIDTH},  # avg_pooler 4 kept: 4 * WIDTH channels out
    "quantizer_kwargs": {
        "input_dim": 4 * WIDTH,
        "rvq_dim": RVQ,
        "output_dim": 4 * WIDTH,
        "codebook_dim": RVQ,
    },
    "post_rvq_adapter_kwargs": {
        "input_dim": 4 * WIDTH,
        "output_dim": 4 * WIDTH,
        "d_model": WIDTH,
        "encoder_layers": LAYERS,
        "encoder_attention_heads": HEADS,
        "encoder_ffn_dim": FFN,
    },
    "upsample_kwargs": {"d_model": WIDTH},  # stride 4 kept: takes 4 * WIDTH channels
    "acoustic_decoder_kwargs": {
        "d_model": WIDTH,
        "decoder_layers": LAYERS,
        "decoder_attention_heads": HEADS,
        "decoder_ffn_dim": FFN,
    },
    "vocos_kwargs": {"dim": WIDTH, "intermediate_dim": FFN, "num_layers": LAYERS},
}


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(_keys(value, f"{prefix}/{key}") for key, value in tree.items())) | {prefix}


def _error(error: BaseException, *files: str) -> dict[str, Any]:
    """The exception, the upstream lines it passed through (in `files`) and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    return {
        "type": type(error).__name__,
        "message": str(error),
        "upstream_lines": [
            f"{Path(f.filename).name}:{f.name}: {f.line}" for f in frames if Path(f.filename).name in files
        ],
        "raised_in": f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "",
    }


# ---- layout --------------------------------------------------------------------------------------------
def place_code(weights: Path, upstream: Path) -> Path:
    code = weights / CODE
    code.parent.mkdir(parents=True, exist_ok=True)
    if not code.exists():
        code.symlink_to(upstream / "MOSS-TTSD-v0.5", target_is_directory=True)
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))  # as the adapter's on_sys_path(code_dir)
    return code


def write_tokenizer_config(weights: Path) -> dict[str, Any]:
    """Upstream's own yaml with SHRINK applied, next to the checkpoint (the adapter prefers it there)."""
    full = yaml.safe_load((weights / CODE / UPSTREAM_YAML).read_text(encoding="utf-8"))
    config = yaml.safe_load((weights / CODE / UPSTREAM_YAML).read_text(encoding="utf-8"))
    params = config["generator_params"]
    for section, values in SHRINK.items():
        for key, value in values.items():
            assert key in params[section], (section, key)  # only keys upstream's yaml has
            params[section][key] = value
    path = weights / TOKENIZER_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return {"same_keys": _keys(full) == _keys(config), "changed": sorted(SHRINK)}


def build_xy_tokenizer(weights: Path) -> dict[str, Any]:
    from XY_Tokenizer.xy_tokenizer.model import XY_Tokenizer

    config = yaml.safe_load((weights / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    torch.manual_seed(0)
    spt = XY_Tokenizer(config["generator_params"])
    for quantizer in spt.quantizer.quantizers:  # random codebooks, marked initialised (no k-means)
        quantizer.codebook.normal_()
        quantizer.embed_avg.copy_(quantizer.codebook)
        quantizer.cluster_size.fill_(1.0)
        quantizer.inited.fill_(True)
    torch.save(spt.state_dict(), weights / CHECKPOINT)
    return {"parameters": sum(p.numel() for p in spt.parameters())}


def build_tokenizer(folder: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|endoftext|>", model_max_length=32768
    )
    fast.save_pretrained(str(folder))
    return fast


def build_model(weights: Path) -> dict[str, Any]:
    from modeling_asteroid import AsteroidTTSConfig, AsteroidTTSInstruct
    from transformers import GenerationConfig

    folder = weights / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    config = AsteroidTTSConfig(
        vocab_size=152697,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=152694,
        channels=8,
        speech_pad_token=1024,
        speech_vocab_size=1025,
        speech_token_range=[151665, 152689],
        torch_dtype="bfloat16",
    )
    config.architectures = ["AsteroidTTSInstruct"]
    torch.manual_seed(0)
    model = AsteroidTTSInstruct(config).eval()
    model.save_pretrained(str(folder))
    # The per-channel sampling upstream's _sample reads (do_samples, layers); few new tokens.
    GenerationConfig(
        do_sample=True,
        max_new_tokens=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=152694,
        do_samples=[True] * 8,
        layers=[{"temperature": 1.0, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.1}] * 8,
    ).save_pretrained(str(folder))
    return {"parameters": sum(p.numel() for p in model.parameters()), "tokens": len(tokenizer)}


# ---- what upstream does with them ----------------------------------------------------------------------
def codec_round_trip(weights: Path) -> dict[str, Any]:
    """Upstream's load_from_checkpoint, encode and decode on the CPU."""
    from XY_Tokenizer.xy_tokenizer.model import XY_Tokenizer

    spt = XY_Tokenizer.load_from_checkpoint(
        config_path=str(weights / TOKENIZER_CONFIG), ckpt_path=str(weights / CHECKPOINT)
    ).eval()
    saved = torch.load(weights / CHECKPOINT, map_location="cpu")
    loaded = spt.state_dict()
    facts: dict[str, Any] = {
        "class": f"{type(spt).__module__}.{type(spt).__name__}",
        "same_weights": saved.keys() == loaded.keys()
        and all(torch.equal(saved[k], loaded[k]) for k in saved),
        "input_sample_rate": spt.input_sample_rate,
        "output_sample_rate": spt.output_sample_rate,
        "encoder_downsample_rate": spt.encoder_downsample_rate,
        "decoder_upsample_rate": spt.decoder_upsample_rate,
        "nq": spt.nq,
        "encode_defaults": {
            name: str(inspect.signature(getattr(spt, name)).parameters["device"].default)
            for name in ("encode", "decode")
        },
    }
    t = torch.arange(max(CLIPS), dtype=torch.float32) / spt.input_sample_rate
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(
        len(t), generator=torch.Generator().manual_seed(1)
    )
    wavs = [wave[:n] for n in CLIPS]
    if not torch.cuda.is_available():
        try:
            spt.encode(wavs)  # upstream's default device
            facts["encode_default_device"] = "ran"
        except Exception as error:  # recorded: the test asserts it
            facts["encode_default_device"] = _error(error, "model.py")
    codes = spt.encode(wavs, device="cpu")["codes_list"]
    decoded = spt.decode(codes, device="cpu")["syn_wav_list"]
    facts["clips"] = [
        {
            "samples": len(wav),
            "codes_shape": list(code.shape),
            "codes_dtype": str(code.dtype),
            "codes_range": [int(code.min()), int(code.max())],
            "codes_device": str(code.device),
            "decoded_samples": int(audio.shape[-1]),
            "decoded_finite": bool(torch.isfinite(audio).all()),
            "decoded_rms": float(audio.float().pow(2).mean().sqrt()),
        }
        for wav, code, audio in zip(wavs, codes, decoded, strict=True)
    ]
    return facts


def upstream_load_model(weights: Path) -> dict[str, Any]:
    """generation_utils.load_model as upstream's inference.py calls it."""
    import generation_utils

    facts: dict[str, Any] = {
        "signature": list(inspect.signature(generation_utils.load_model).parameters),
        "flash_attn_importable": __import__("importlib.util").util.find_spec("flash_attn") is not None,
        "cuda": torch.cuda.is_available(),
    }
    try:
        generation_utils.load_model(
            str(weights / MODEL), str(weights / TOKENIZER_CONFIG), str(weights / CHECKPOINT)
        )
        facts["result"] = "loaded"
    except Exception as error:  # recorded: the test asserts it
        facts["result"] = _error(error, "generation_utils.py")
    return facts


def past_load_model(weights: Path, more_items: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """As far as upstream goes past load_model on the CPU: its class loaded with the attentions load_model
    does not allow, fed by upstream's own input builders; then upstream's process_batch."""
    import generation_utils as gu
    import soundfile as sf
    from modeling_asteroid import AsteroidTTSInstruct
    from transformers import AutoTokenizer
    from XY_Tokenizer.xy_tokenizer.model import XY_Tokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(weights / MODEL))
    spt = XY_Tokenizer.load_from_checkpoint(
        config_path=str(weights / TOKENIZER_CONFIG), ckpt_path=str(weights / CHECKPOINT)
    ).eval()
    # What process_batch hands model.generate for a script without prompt audio, built by the same calls.
    text = gu.normalize_text(SCRIPT).replace("[S1]", "<speaker1>").replace("[S2]", "<speaker2>")
    rows = gu.shifting_inputs(gu.process_inputs(tokenizer, spt, SYSTEM_PROMPT, text, "cpu"), tokenizer)
    input_ids, attention_mask = gu.rpadding([rows], gu.MAX_CHANNELS, tokenizer)
    facts: dict[str, Any] = {"input_ids_shape": list(input_ids.shape)}
    models = {}
    for attention in ("sdpa", "eager"):
        model = AsteroidTTSInstruct.from_pretrained(
            str(weights / MODEL), torch_dtype=torch.float32, attn_implementation=attention
        ).eval()
        one: dict[str, Any] = {"attn_implementation": model.config._attn_implementation}
        with torch.no_grad():  # one plain forward pass over the whole prompt works
            out = model(input_ids=input_ids, attention_mask=attention_mask)
        one["forward_logits"] = [list(logits.shape) for logits in out.logits_all]
        torch.manual_seed(0)
        try:
            with torch.no_grad():
                one["generate"] = list(
                    model.generate(input_ids=input_ids, attention_mask=attention_mask).shape
                )
        except Exception as error:  # recorded: the test asserts it
            one["generate"] = _error(error, "generation_utils.py", "modeling_asteroid.py")
        facts[attention] = one
        models[attention] = model

    # upstream's process_batch, one script at a time: no prompt, prompt files, prompt (wav, sr) tuples
    clip = weights / "prompt.wav"
    wav = 0.1 * torch.sin(torch.arange(16000) * 0.05)
    sf.write(str(clip), wav.numpy(), 16000)
    speakers = {"prompt_text_speaker1": "Hi there.", "prompt_text_speaker2": "Hello."}
    items = {
        "no_prompt": {"text": SCRIPT},
        "null_prompt": {"text": SCRIPT, "prompt_audio": None, "prompt_text": ""},
        "prompt_files": {**speakers, "prompt_audio_speaker1": str(clip), "prompt_audio_speaker2": str(clip)},
        "prompt_tuples": {
            **speakers,
            "prompt_audio_speaker1": (wav[None], 16000),
            "prompt_audio_speaker2": (wav[None], 16000),
        },
    }
    items.update(more_items or {})
    for name, item in items.items():
        item.setdefault("text", SCRIPT)
        try:
            with torch.no_grad():
                _, results = gu.process_batch(
                    batch_items=[item],
                    tokenizer=tokenizer,
                    model=models["sdpa"],
                    spt=spt,
                    device="cpu",
                    system_prompt=SYSTEM_PROMPT,
                    start_idx=0,
                    use_normalize=True,
                )
            facts[name] = {"results": [r is not None for r in results]}
        except Exception as error:  # recorded: the test asserts it
            facts[name] = _error(error, "generation_utils.py", "modeling_asteroid.py", "model.py")
    facts["processed_no_prompt"] = gu.process_jsonl_item(items["no_prompt"])
    return facts


def run(
    weights: Path, upstream: Path = UPSTREAM, items: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Build everything under `weights` and run the checks; `items`: more process_batch items, by name."""
    import importlib.util

    import transformers

    weights.mkdir(parents=True, exist_ok=True)
    place_code(weights, upstream)
    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torchcodec": importlib.util.find_spec("torchcodec") is not None,
    }
    facts["tokenizer_config"] = write_tokenizer_config(weights)
    facts["tokenizer_built"] = build_xy_tokenizer(weights)
    facts["model_built"] = build_model(weights)
    facts["codec"] = codec_round_trip(weights)
    facts["load_model"] = upstream_load_model(weights)
    facts["past_load_model"] = past_load_model(weights, items)
    import generation_utils

    facts["modules_from"] = {
        name: str(Path(module.__file__).parent)
        for name, module in sys.modules.items()
        if name in ("generation_utils", "modeling_asteroid", "XY_Tokenizer.xy_tokenizer.model")
    }
    facts["max_channels"] = generation_utils.MAX_CHANNELS
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--upstream", type=Path, default=UPSTREAM)
    parser.add_argument(
        "--items", type=Path, default=None, help="a JSON object of more process_batch items, by name"
    )
    args = parser.parse_args()
    items = json.loads(args.items.read_text(encoding="utf-8")) if args.items else None
    facts = run(args.weights, args.upstream, items)
    print(json.dumps(facts, ensure_ascii=False))


if __name__ == "__main__":
    main()
