"""Tiny random-weight MOSS-TTSD v1.0 + MOSS-Audio-Tokenizer folders, laid out on disk like the hub's,
for tests that run upstream's own inference code on CPU.

    HF_HUB_OFFLINE=1 <engine python> tests/moss_tiny.py WEIGHTS_DIR [--frames N] [--upstream DIR]

Runs inside the engine's own environment (torch 2.9.1, torchaudio 2.9.1, transformers 5.0.0); it
imports nothing from the studio. Both models are instances of the UPSTREAM classes, imported from the
remote-code files this script copies (unchanged) out of DIR (default /work/shared/upstream, or
$MOSS_UPSTREAM): MOSS-TTS/moss_tts_delay/*.py and MOSS-Audio-Tokenizer/*.py. It writes

  WEIGHTS_DIR/MOSS-TTSD/MOSS-TTSD-v1.0/      remote code, config.json (auto_map), processor_config.json
                                             (auto_map), generation_config.json (the model card's
                                             sampling), model.safetensors, tokenizer files
  WEIGHTS_DIR/MOSS-TTSD/MOSS-Audio-Tokenizer/ remote code, config.json (auto_map), model.safetensors

and prints one JSON line (`build(weights_dir, frames)` returns the same dict): {"model", "codec",
"frames", "samples_per_frame", "sample_rate", "expected_samples", ...}.

Sizes: Qwen3 backbone 2 layers, hidden 32, 4 heads / 2 kv heads, head_dim 16, vocab 151680 (>= 151663:
`generate()` hard-codes token id 151662), n_vq 16, the real special-token ids. Codec: the real strides
(patch 240 then 2*2*2 = 1920 samples per frame, 12.5 frames/s at 24 kHz), 1-layer d_model-32
transformers, an rlfq quantizer with 16 quantizers (= n_vq; the processor encodes with all of them).

Tokenizer (built offline with `tokenizers`, Qwen2's exact pipeline): byte-level BPE trained on a few
English/Chinese sentences, the 256 byte symbols in GPT-2 order (so "\\n" is id 198, as the processor
assumes), filler entries up to id 151642, then Qwen's added tokens at their real ids with MOSS's names
(151643 <|endoftext|>, 151644 <|im_start|>, 151645 <|im_end|>, 151652 <|audio_start|>,
151653 <|audio_end|>, 151654 <|audio_user_slot|>, 151656 <|audio_assistant_gen_slot|>,
151662 <|audio_assistant_delay_slot|>, ...). "<|im_start|>assistant\\n" is exactly 3 tokens
(`generate()` finds the reply at the last <|im_start|> + 3). Any text, Chinese included, encodes
(byte fallback through the 256 byte symbols). tokenizer_config.json names Qwen2Tokenizer; the chat
template (chat_template.jinja) is plain ChatML without a default system message.

HOW THE LENGTH IS MADE DETERMINISTIC (N = --frames, default 12)
---------------------------------------------------------------
`MossTTSDelayModel.generate()` decides everything from the text head (lm_heads[0]) and audio channel
0 (lm_heads[1]): inside an audio block the text head may only choose <|audio_assistant_gen_slot|>
(one more frame) or <|audio_assistant_delay_slot|> (close the block: n_vq-1 forced delay steps, then
a forced <|audio_end|>); outside a block it samples freely except pad/gen/delay/audio_end. So the
fixture makes channel 0 a counter and lets the text head read it:

* Five "control" dimensions of the 32-dim residual stream (the last five, CTRL_DIMS) carry hand-set
  features; every layer's `self_attn.o_proj` and `mlp.down_proj` rows for those dims are zeroed, so the
  decoder layers (random, untouched otherwise) never write there and the control dims reach the final
  RMSNorm exactly as embedded. Those dims are zeroed in every other embedding row and every head column.
  - BIAS: `language_model.embed_tokens.weight[:, BIAS] = 2` (every text token): a constant, i.e. a bias.
  - AEND: `embed_tokens.weight[<|audio_end|>, AEND] = 2`: "the previous step closed an audio block".
  - X, Y: `emb_ext[0].weight[code(i), X:Y] = 2*(cos i*t, sin i*t)`, t = 2*pi/(N+2), i = 0..N, where
    code(i) = i + 1 are the counter codes of channel 0.
  - LAST: `emb_ext[0].weight[code(N-1), LAST] = 2`: "the previous frame was frame N-1".
* Heads (logit = weight . normalised hidden; only these control-dim columns are non-zero):
  - lm_heads[0][gen_slot, BIAS] = 20 and [delay_slot, LAST] = 60: keep emitting frames until the input
    frame is code(N-1), then close the block (measured margins: ~80 logits for gen, ~130 for delay).
  - lm_heads[0][audio_start, BIAS] = 20 and [im_end, AEND] = 60: outside a block, open one
    (generation/voice-clone modes), except right after <|audio_end|>, where <|im_end|> wins: the model
    stops after exactly one audio block.
  - lm_heads[1][code(0), BIAS] = 10 and lm_heads[1][code(j), X:Y] = W*(cos (j-1)t, sin (j-1)t), j >= 1,
    W = 20/(1-cos t): channel 0 maps any non-counter input code to code(0) and code(i) to code(i+1),
    with a measured margin >= ~55 logits, so sampling (temperature 1.1, top-k 50, top-p 0.9, repetition
    penalty 1.1) cannot change it.
* Codec: quantizer 0's `in_proj` (weight-normed 1x1 conv) gets `parametrizations.weight.original0[0]
  = 0` and `bias[0] = 10`, so latent dim 0 is always +10; codebook row 0 = +r*e0 and the counter rows
  code(0..N) = -r*e0 (r = the median row norm). LFQ picks the codebook row closest in cosine, so the
  ENCODER NEVER EMITS A COUNTER CODE in channel 0: a prompt can never start the counter mid-way
  (decoding counter codes is fine). The last decoder transformer's output_proj is rescaled so decoded
  audio has RMS ~0.05 (not ~1e-5).
  Channels 1..15 stay random: their codes are sampled and change from run to run, the length does not.

Resulting timelines (the assistant message of continuation mode already holds L prompt frames):
* continuation: steps 0..N-1 gen_slot, step N delay_slot (+ a last channel-0 frame), n_vq-1 forced
  delays, <|audio_end|>, <|im_end|>: N + n_vq + 2 generated steps, N + 1 new frames. The processor's
  `decode` de-delays, decodes the whole segment (prompt + new frames) and trims `start_length / frames`
  of it, where start_length = L + 1 counts the <|audio_start|> row too, so the returned wav holds
  N * 1920 samples (N + 1 frames generated, one frame's worth trimmed along with the prompt), and it
  does NOT include the prompt audio. Upstream trims with `int(samples * ratio)` in floating point, so
  for some prompt lengths L (e.g. L = 16, 30, 32, 33 at N = 12) the wav is N * 1920 + 1 samples.
* generation / voice_clone (no prompt audio in the assistant turn): step 0 <|audio_start|>, then
  N gen_slot steps, so N + 1 frames and (N + 1) * 1920 samples, nothing trimmed.
The JSON's "expected_samples" is measured by this script on one continuation run (prompt length
chosen so that no rounding applies) and checked against N * 1920.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import sys
import time
import types
from pathlib import Path

import torch

UPSTREAM = Path(os.environ.get("MOSS_UPSTREAM", "/work/shared/upstream"))
TTS_FILES = (
    "configuration_moss_tts.py",
    "modeling_moss_tts.py",
    "processing_moss_tts.py",
    "inference_utils.py",
    "tts_robust_normalizer_single_script.py",
)
CODEC_FILES = ("configuration_moss_audio_tokenizer.py", "modeling_moss_audio_tokenizer.py", "__init__.py")
MODEL_SUBDIR = Path("MOSS-TTSD") / "MOSS-TTSD-v1.0"
CODEC_SUBDIR = Path("MOSS-TTSD") / "MOSS-Audio-Tokenizer"

SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = 1920
N_VQ = 16
VOCAB_SIZE = 151680
HIDDEN = 32
DEFAULT_FRAMES = 12

PAD, IM_START, IM_END = 151643, 151644, 151645
AUDIO_START, AUDIO_END, USER_SLOT, GEN_SLOT, DELAY_SLOT = 151652, 151653, 151654, 151656, 151662
# Qwen's added tokens at their real ids; MOSS renames the vision/video/fim ones.
ADDED_TOKENS = {
    151643: ("<|endoftext|>", True),
    151644: ("<|im_start|>", True),
    151645: ("<|im_end|>", True),
    151646: ("<|object_ref_start|>", True),
    151647: ("<|object_ref_end|>", True),
    151648: ("<|box_start|>", True),
    151649: ("<|box_end|>", True),
    151650: ("<|quad_start|>", True),
    151651: ("<|quad_end|>", True),
    151652: ("<|audio_start|>", True),
    151653: ("<|audio_end|>", True),
    151654: ("<|audio_user_slot|>", True),
    151655: ("<|image_pad|>", True),
    151656: ("<|audio_assistant_gen_slot|>", True),
    151657: ("<tool_call>", False),
    151658: ("</tool_call>", False),
    151659: ("<|fim_prefix|>", False),
    151660: ("<|fim_middle|>", False),
    151661: ("<|fim_suffix|>", False),
    151662: ("<|audio_assistant_delay_slot|>", True),
    151663: ("<|repo_name|>", False),
    151664: ("<|file_sep|>", False),
    151665: ("<tool_response>", False),
    151666: ("</tool_response>", False),
    151667: ("<think>", False),
    151668: ("</think>", False),
}
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CORPUS = [
    "Hello there. Hi, how are you? Fine, thanks. The quick brown fox jumps over the lazy dog.",
    "Speech studio reads a dialogue aloud with two or three speakers, one line after another.",
    "This is a test of the text to speech system; numbers like 1, 2, 3 and 2026 are read too.",
    "你好，欢迎使用语音合成。今天天气很好，我们一起去公园散步吧。谢谢，再见！",
    "user assistant system Reference Instruction Tokens Quality Sound Event Ambient Language Text None",
    "<user_inst> </user_inst> - Reference(s): - Instruction: - Tokens: - Quality: - Language: - Text:",
] + ["assistant\nuser\nsystem\n"] * 50

# Control dims of the residual stream (see the docstring).
BIAS, AEND, LAST, X, Y = range(HIDDEN - 5, HIDDEN)
CTRL_DIMS = [BIAS, AEND, LAST, X, Y]
CTRL_VALUE = 2.0


def counter_code(i: int) -> int:
    """Channel-0 code of the i-th generated frame (i = 0..N)."""
    return i + 1


# --------------------------------------------------------------------------------------------------
# upstream classes


def import_remote(folder: Path, module: str):
    """Import `module` from a remote-code folder as a package (the files use relative imports)."""
    pkg_name = "_moss_tiny_" + "".join(c if c.isalnum() else "_" for c in folder.name)
    if pkg_name not in sys.modules:
        pkg = types.ModuleType(pkg_name)
        pkg.__path__ = [str(folder)]
        sys.modules[pkg_name] = pkg
    return importlib.import_module(f"{pkg_name}.{module}")


def copy_remote_code(src: Path, dst: Path, names) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src / name, dst / name)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def patch_json(path: Path, **updates) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(updates)
    write_json(path, data)


# --------------------------------------------------------------------------------------------------
# tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, in GPT-2's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _qwen2_pipeline(tokenizer) -> None:
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()


def build_tokenizer(folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

    trainer_tok = Tokenizer(models.BPE())
    _qwen2_pipeline(trainer_tok)
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trainer_tok.train_from_iterator(CORPUS, trainer)
    merges = [
        tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
        for m in json.loads(trainer_tok.to_str())["model"]["merges"]
    ]

    vocab: dict[str, int] = {}
    for ch in bytes_to_unicode().values():  # ids 0..255 in GPT-2 order: "\n" ("Ċ") is 198
        vocab[ch] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    filler = 0
    while len(vocab) < PAD:  # unreachable filler entries up to the real special-token ids
        vocab[f"<|tiny_filler_{filler}|>"] = len(vocab)
        filler += 1

    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    _qwen2_pipeline(tok)
    for token_id in sorted(ADDED_TOKENS):
        content, special = ADDED_TOKENS[token_id]
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        assert tok.token_to_id(content) == token_id, (content, tok.token_to_id(content), token_id)
    tok.save(str(folder / "tokenizer.json"))

    write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    added = {
        str(i): {
            "content": c,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": s,
        }
        for i, (c, s) in sorted(ADDED_TOKENS.items())
    }
    write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    write_json(
        folder / "special_tokens_map.json",
        {
            "eos_token": {
                "content": "<|im_end|>",
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            },
            "pad_token": {
                "content": "<|endoftext|>",
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            },
        },
    )
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")

    ids = tok.encode("<|im_start|>assistant\n<|audio_start|>").ids
    assert ids[0] == IM_START and ids[3] == AUDIO_START and ids[2] == 198, ids


# --------------------------------------------------------------------------------------------------
# codec


def _codec_transformer(inp: int, out: int, d_model: int = 32) -> dict:
    return {
        "module_type": "Transformer",
        "input_dimension": inp,
        "output_dimension": out,
        "d_model": d_model,
        "num_heads": 2,
        "num_layers": 1,
        "dim_feedforward": 64,
        "causal": True,
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "max_period": 10000,
        "gating": "none",
        "layer_scale": 0.01,
        "conv_layout": True,
    }


def _patch(size: int) -> dict:
    return {"module_type": "PatchedPretransform", "patch_size": size}


def build_codec(folder: Path, src: Path, frames: int):
    copy_remote_code(src, folder, CODEC_FILES)
    cfg_mod = import_remote(folder, "configuration_moss_audio_tokenizer")
    mdl_mod = import_remote(folder, "modeling_moss_audio_tokenizer")
    code_dim = 32
    config = cfg_mod.MossAudioTokenizerConfig(
        version="tiny-random",
        sampling_rate=SAMPLE_RATE,
        downsample_rate=SAMPLES_PER_FRAME,
        causal_transformer_context_duration=10,
        # the real module sequence and strides (240 * 2 * 2 * 2 = 1920), tiny widths
        encoder_kwargs=[
            _patch(240),
            _codec_transformer(240, 16),
            _patch(2),
            _codec_transformer(32, 16),
            _patch(2),
            _codec_transformer(32, 16),
            _patch(2),
            _codec_transformer(32, code_dim),
        ],
        decoder_kwargs=[
            _codec_transformer(code_dim, 32),
            _patch(2),
            _codec_transformer(16, 32),
            _patch(2),
            _codec_transformer(16, 32),
            _patch(2),
            _codec_transformer(16, 240),
            _patch(240),
        ],
        quantizer_type="rlfq",
        quantizer_kwargs={
            "input_dim": code_dim,
            "rvq_dim": 16,
            "output_dim": code_dim,
            "num_quantizers": N_VQ,
            "codebook_size": 1024,
            "codebook_dim": 8,
            "quantizer_type": "rlfq",
        },
    )
    config.architectures = ["MossAudioTokenizerModel"]
    codec = mdl_mod.MossAudioTokenizerModel(config).eval()
    with torch.no_grad():
        q0 = codec.quantizer.quantizers[0]
        q0.in_proj.parametrizations.weight.original0[0] = 0.0  # latent dim 0 ignores the input ...
        q0.in_proj.bias[0] = 10.0  # ... and is always +10
        cb = q0.codebook.weight
        norm = float(cb.norm(dim=1).median())  # keep the typical row norm (decoded loudness)
        cb[0] = 0.0
        cb[0, 0] = norm  # +e0: always closer (cosine) than any counter code
        for i in range(frames + 1):
            cb[counter_code(i)] = 0.0
            cb[counter_code(i), 0] = -norm  # -e0: never chosen by the encoder
        # Random layers with layer_scale 0.01 decode to RMS ~1e-5: rescale to RMS ~0.05 (peaks < 1).
        codes = torch.randint(0, 1024, (N_VQ, 1, 50))
        codes[0, 0, :25] = 0
        codes[0, 0, 25:] = torch.arange(counter_code(0), counter_code(frames) + 1).repeat(25)[:25]
        wav = codec.decode(codes, return_dict=True).audio
        rms = float(wav.pow(2).mean().sqrt())
        if rms > 0:
            codec.decoder[-2].output_proj.weight.mul_(0.05 / rms)
    codec.save_pretrained(folder)
    patch_json(
        folder / "config.json",
        auto_map={
            "AutoConfig": "configuration_moss_audio_tokenizer.MossAudioTokenizerConfig",
            "AutoModel": "modeling_moss_audio_tokenizer.MossAudioTokenizerModel",
        },
    )
    return codec


# --------------------------------------------------------------------------------------------------
# model


def make_length_deterministic(model, frames: int) -> dict:
    """The hand-set weights described in the module docstring; returns the numbers used."""
    theta = 2 * math.pi / (frames + 2)
    w_angle = 20.0 / (1.0 - math.cos(theta))
    lm = model.language_model
    with torch.no_grad():
        for layer in lm.layers:  # layers never write the control dims
            layer.self_attn.o_proj.weight[CTRL_DIMS, :] = 0.0
            layer.mlp.down_proj.weight[CTRL_DIMS, :] = 0.0
        lm.norm.weight[CTRL_DIMS] = 1.0
        emb = lm.embed_tokens.weight
        emb[:, CTRL_DIMS] = 0.0
        emb[:, BIAS] = CTRL_VALUE
        emb[AUDIO_END, AEND] = CTRL_VALUE
        for ext in model.emb_ext:
            ext.weight[:, CTRL_DIMS] = 0.0
        ch0 = model.emb_ext[0].weight
        for i in range(frames + 1):
            ch0[counter_code(i), X] = CTRL_VALUE * math.cos(i * theta)
            ch0[counter_code(i), Y] = CTRL_VALUE * math.sin(i * theta)
        ch0[counter_code(frames - 1), LAST] = CTRL_VALUE
        for head in model.lm_heads:
            head.weight[:, CTRL_DIMS] = 0.0
        text = model.lm_heads[0].weight
        text[GEN_SLOT, BIAS] = 20.0
        text[DELAY_SLOT, LAST] = 60.0
        text[AUDIO_START, BIAS] = 20.0
        text[IM_END, AEND] = 60.0
        audio0 = model.lm_heads[1].weight
        audio0[counter_code(0), BIAS] = 10.0
        for j in range(1, frames + 1):
            audio0[counter_code(j), X] = w_angle * math.cos((j - 1) * theta)
            audio0[counter_code(j), Y] = w_angle * math.sin((j - 1) * theta)
    return {"theta": theta, "w_angle": w_angle}


def build_model(folder: Path, src: Path, frames: int):
    copy_remote_code(src, folder, TTS_FILES)
    cfg_mod = import_remote(folder, "configuration_moss_tts")
    mdl_mod = import_remote(folder, "modeling_moss_tts")
    language_config = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": PAD,
        "eos_token_id": IM_END,
        "initializer_range": 0.02,
    }
    config = cfg_mod.MossTTSDelayConfig(language_config=language_config, n_vq=N_VQ, sampling_rate=SAMPLE_RATE)
    config.architectures = ["MossTTSDelayModel"]
    model = mdl_mod.MossTTSDelayModel(config).eval()
    make_length_deterministic(model, frames)
    model.save_pretrained(folder)
    patch_json(
        folder / "config.json",
        auto_map={
            "AutoConfig": "configuration_moss_tts.MossTTSDelayConfig",
            "AutoModel": "modeling_moss_tts.MossTTSDelayModel",
        },
    )
    write_json(
        folder / "processor_config.json",
        {
            "auto_map": {"AutoProcessor": "processing_moss_tts.MossTTSDelayProcessor"},
            "processor_class": "MossTTSDelayProcessor",
        },
    )
    steps = frames + N_VQ + 2
    write_json(
        folder / "generation_config.json",
        {
            "do_sample": True,
            "temperature": 1.1,
            "top_p": 0.9,
            "top_k": 50,
            "repetition_penalty": 1.1,
            "max_new_tokens": max(256, 4 * steps),
            "transformers_version": json.loads((folder / "config.json").read_text())["transformers_version"],
        },
    )
    build_tokenizer(folder)
    return model, mdl_mod


def trimmed_samples(prompt_frames: int, frames: int) -> int:
    """Upstream's `_parse_audio_codes` trim, for a continuation of `prompt_frames` prompt frames."""
    total = (prompt_frames + frames + 1) * SAMPLES_PER_FRAME
    ratio = max(0.0, min(float(prompt_frames + 1) / float(prompt_frames + frames + 1), 1.0))
    return total - int(total * ratio)


def measure(model_dir: Path, model, codec, frames: int) -> int:
    """One continuation run through the upstream processor: generate + decode; returns wav samples."""
    from transformers import AutoTokenizer

    proc_mod = import_remote(model_dir, "processing_moss_tts")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    processor = proc_mod.MossTTSDelayProcessor(
        tokenizer=tokenizer, audio_tokenizer=codec, model_config=model.config
    )
    n_prompt = next(L for L in range(20, 200) if trimmed_samples(L, frames) == frames * SAMPLES_PER_FRAME)
    wav = torch.randn(1, n_prompt * SAMPLES_PER_FRAME) * 0.1
    codes = processor.encode_audios_from_wav([wav], sampling_rate=SAMPLE_RATE)[0]
    assert not ((codes[:, 0] >= counter_code(0)) & (codes[:, 0] <= counter_code(frames))).any()
    conversation = [
        processor.build_user_message(text="[S1]Hello there.[S2]你好，谢谢。"),
        processor.build_assistant_message(audio_codes_list=[codes]),
    ]
    batch = processor([conversation], mode="continuation")
    out = model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        max_new_tokens=frames + N_VQ + 50,
        audio_temperature=1.1,
        audio_top_p=0.9,
        audio_top_k=50,
        audio_repetition_penalty=1.1,
    )
    start_length, ids = out[0]
    new_rows = ids.shape[0] - int(start_length)
    assert new_rows == frames + N_VQ + 2, (new_rows, ids[int(start_length) :, 0].tolist())
    message = processor.decode(out)[0]
    assert message is not None and len(message.audio_codes_list) == 1
    audio = message.audio_codes_list[0]
    assert torch.isfinite(audio).all()
    return int(audio.shape[-1])


def build(
    weights_dir: Path, frames: int = DEFAULT_FRAMES, upstream: Path = UPSTREAM, check: bool = True
) -> dict:
    if not 1 <= frames <= 1000:
        raise ValueError("frames must be in 1..1000")
    weights_dir = Path(weights_dir).resolve()
    model_dir, codec_dir = weights_dir / MODEL_SUBDIR, weights_dir / CODEC_SUBDIR
    for folder in (model_dir, codec_dir):
        if folder.exists():
            shutil.rmtree(folder)
    torch.manual_seed(1234)
    codec = build_codec(codec_dir, upstream / "MOSS-Audio-Tokenizer", frames)
    model, _ = build_model(model_dir, upstream / "MOSS-TTS" / "moss_tts_delay", frames)
    result = {
        "model": str(model_dir),
        "codec": str(codec_dir),
        "frames": frames,
        "samples_per_frame": SAMPLES_PER_FRAME,
        "sample_rate": SAMPLE_RATE,
        "expected_samples": frames * SAMPLES_PER_FRAME,
        "expected_samples_generation_mode": (frames + 1) * SAMPLES_PER_FRAME,
        "generated_steps": frames + N_VQ + 2,
        "n_vq": N_VQ,
    }
    if check:
        torch.manual_seed(0)
        measured = measure(model_dir, model, codec, frames)
        assert measured == result["expected_samples"], (measured, result)
        result["expected_samples"] = measured
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights_dir", type=Path)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--upstream", type=Path, default=UPSTREAM)
    parser.add_argument("--no-check", action="store_true", help="skip the measuring generate/decode run")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    result = build(args.weights_dir, args.frames, args.upstream, check=not args.no_check)
    result["build_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
