"""A random-weight MegaTTS3 checkpoint folder in upstream's real on-disk layout, for tests that run
upstream's own, unmodified `MegaTTS3DiTInfer` (preprocess + forward) on CPU.

    <megatts3 env python> tests/megatts3_tiny.py WEIGHTS_DIR --upstream /work/shared/upstream/MegaTTS3 [--check]

Runs inside the engine's own environment (envs/megatts3: torch 2.6.0, transformers 4.49) and imports
nothing from the studio. It writes

  WEIGHTS_DIR/MegaTTS3/code -> UPSTREAM                      (a symlink to upstream's code folder)
  WEIGHTS_DIR/MegaTTS3/checkpoints/
      diffusion_transformer/config.yaml, model_only_last.ckpt   {"state_dict": {"dit": ...}}   full size
      aligner_lm/config.yaml, model_only_last.ckpt              {"state_dict": {"model": ...}} full size
      duration_lm/config.yaml, model_only_last.ckpt             {"state_dict": {"dur_model": ...}} tiny
      g2p/config.json, model.safetensors, tokenizer files       a Qwen2 causal LM, tiny
      wavvae/config.yaml, decoder.ckpt                          {"state_dict": {"model_gen": ...}} full size
  WEIGHTS_DIR/reference.wav   a 24 kHz 16-bit mono chirp with noise (--seconds, default 1)
  WEIGHTS_DIR/reference.npy   its "latent": float32 [1, 25 * seconds, 32], random normal

and prints one JSON line (paths, build seconds, sizes); `--check` then runs what the studio's worker
runs (see `check`) and prints one JSON line for loading + preprocess and one per sentence.

WHY THREE MODELS ARE FULL SIZE
------------------------------
The studio's worker builds the model with upstream's unmodified `MegaTTS3DiTInfer(device="cpu",
ckpt_root=...)`, and `build_model` instantiates three classes whose sizes are hard-coded, not read
from any config: `Diffusion()` (tts/modules/llm_dit/dit.py, 1024-dim x 24 layers, ~459M parameters),
the aligner's `Whisper()` (tts/modules/aligner/whisper_small.py, 512-dim 6+6 layers, vocab 6800,
~55M) and `WavVAE_V3`'s decoder `Generator(ngf=128)` (~226M). Their checkpoints must therefore match
those shapes: they are random initialisations of upstream's own classes, stored as float16 (half the
disk; `load_state_dict` copies them into the float32 modules). The WaveVAE checkpoint holds only the
decoder side (`decoder.ckpt`, as ByteDance ships it: no encoder, so the reference needs its `.npy`
latent). Only the duration LM reads its size from its config.yaml, and the g2p is a transformers
folder, so those two are tiny. The other configs only carry audio constants: diffusion_transformer/
config.yaml becomes upstream's global `hparams` (win_size, frames_multiple are read), wavvae/
config.yaml gives `melgan_config` (frame_shift, use_tanh), vae_stride and hop_size; the aligner's
config.yaml is written for the layout only (upstream never reads it).

WEIGHTS SET BY HAND (everything else is upstream's random init, seed 0)
------------------------------------------------------------------------
Purely random weights trip upstream's own asserts (`split_ph_timestamp` needs phone/time pairs, the
g2p must return phone ids its dictionaries know) and give random lengths. So:

* g2p (Qwen2, hidden 64): every layer's `o_proj` and `mlp.down_proj` are zero, so the final hidden
  state is the last token's embedding. The tokens of one fixed chain get one-hot embeddings and
  `lm_head` maps each to its successor: after the prompt's last token (upstream appends
  <Reserved_TTS_145>, "sil") it emits G2P_PHONES then <Reserved_TTS_801> (upstream's end token), for
  ANY text: the phone sequence is always sil, a Chinese phone, two English phones, "。".
* aligner (Whisper): token embeddings, every decoder block's attention/cross-attention output
  projections and MLP output layers are zero, so logits depend on the position only; one-hot
  positional embeddings and `out_proj` make it emit ALIGN_TOKENS (5 phones with end times 10..90
  mel frames, then the end token 799) whatever the audio. Its audio encoder stays random.
* duration LM: `project_out_dim` weight zero and a one-hot bias, so every predicted duration code is
  DUR_CODE (a duration of DUR_CODE - 1 = 3 mel frames).
* WaveVAE decoder: its last layer (a 1x1 Conv1d, since use_tanh is false) becomes the identity
  (weight 1, bias 0). Randomly initialised, its bias (~0.8) dwarfs the random decoder's output (std
  ~3e-4) and the clip upstream returns is a DC offset blown up by its loudness normalisation.

OUTPUT LENGTH (deterministic: independent of the text, the seed and `dur_disturb` <= 0.1; dur_alpha 1)
-------------------------------------------------------------------------------------------------------
Upstream's `dur_pred` sets the first phone to 8 frames, keeps the three 3-frame phones at 3 (the
+-10% `dur_disturb` rounds back to 3), clamps the last one to 64 then disturbs it (58..70, then 64..70
because "。" is clamped to >= 64) and pads the sum to a multiple of 8: 8 + 9 + 64..70 = 81..87 -> 88
mel frames (100 per second), i.e. 22 latent frames for any text of one chunk (chunks: 130 characters
English, 60 Chinese). The WAV it returns is the decoded latents minus the prompt's latent frames:
    samples = ((M_ref + 88) / 4 - L) * 960,
M_ref = the reference's mel frames after upstream pads it (clip + up to 959 samples + 12000 samples,
16 kHz log-mel, floored to a multiple of 8), L = min(npy frames, M_ref / 4). For the default 1 s
reference: M_ref = 152, L = 25, so 35 latent frames = 33600 samples = 1.40 s per chunk (with a 2 s
one: 248, 50, 32640 samples); the ~0.5 s of zeros upstream appends to the prompt come out too.
Every text of one chunk gives the same length. Longer texts are cut into chunks: a chunk that is not
the last gets 32 more frames on its last phone, which "。" clamps to 64 anyway, but chunks after the
first keep their first phone ("sil", clamped to >= 64) at 64 instead of 8: 64 + 9 + 64..70 -> 144
frames. Each chunk's WAV is computed as above (88 or 144) and they are joined with 0.16 s (3840
samples) crossfades; `expected_samples` does the sum.
With dur_alpha != 1 (the studio's speed) the rounding no longer absorbs `dur_disturb`: measured over
200 seeds, dur_alpha 0.8 gives 80 or 88 frames, 1.25 gives 96..112 (seed torch to pin it).

Cost: the full-size DiT and vocoder run on all latent frames (prompt + padding + 22 new), so a
shorter reference makes `forward` faster; upstream's aligner needs >= 90 mel frames (0.9 s of audio
after its 0.5 s padding, so any clip > ~0.4 s).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import yaml

SAMPLE_RATE = 24000
LATENT_RATE = 25  # WaveVAE latent frames per second (hop 240 x vae_stride 4 at 24 kHz)
LATENT_DIM = 32
SEED = 0

# Phone ids as upstream's dict.json numbers them (3 reserved ids first); Chinese phones are written
# into the LM vocabularies as 200 + (phone - 3) * 6 + tone (tone 1..6), see ph_tone_convert.py.
SIL, PERIOD = 145, 148  # "sil", "。"
E_HH, E_L, E_OW = 118, 124, 129  # English "hh", "l", "ow"
ZH_A3 = 200 + (3 - 3) * 6 + 3  # Chinese "a", tone 3
ZH_AI1 = 200 + (4 - 3) * 6 + 1  # Chinese "ai", tone 1

G2P_PHONES = [ZH_A3, E_HH, E_OW, PERIOD]  # emitted after the "sil" upstream appends to the prompt
G2P_END = 801  # <Reserved_TTS_801>, upstream's eos for the g2p
G2P_RESERVED = 802  # <Reserved_TTS_0..801>
G2P_HIDDEN = 64

ALIGN_START, ALIGN_END, ALIGN_TIME = 798, 799, 800  # time tokens are 800 + mel frame
ALIGN_PHONES = [SIL, ZH_AI1, E_L, E_OW, SIL]
ALIGN_ENDS = [10, 30, 50, 70, 90]  # cumulative end frame of each phone (mel frames, 100 per second)
ALIGN_TOKENS = [t for ph, end in zip(ALIGN_PHONES, ALIGN_ENDS, strict=True) for t in (ph, ALIGN_TIME + end)]
ALIGN_TOKENS.append(ALIGN_END)

DUR_CODE = 4  # the duration LM's class; upstream subtracts 1 -> 3 mel frames per phone
DUR_CODE_SIZE = 128

DIT_CONFIG = {
    "audio_sample_rate": SAMPLE_RATE,
    "hop_size": 240,
    "win_size": 960,
    "frames_multiple": 8,
    "vae_stride": 4,
}
WAVVAE_CONFIG = {
    "audio_sample_rate": SAMPLE_RATE,
    "hop_size": 240,
    "vae_stride": 4,
    "melgan_config": {"frame_shift": 240, "use_tanh": False},
}
ALIGNER_CONFIG = {"audio_sample_rate": 16000, "n_mels": 80, "n_vocab": 6800}  # not read by upstream
DURATION_CONFIG: dict[str, Any] = {
    "dur_model_type": "ar",  # classification over dur_code_size + 1 classes ("ar_mse" regresses)
    "dur_txt_hs": 64,
    "dur_model_hidden_size": 64,
    "dur_model_layers": 2,
    "dur_code_size": DUR_CODE_SIZE,
    "use_rot_embed": True,
    "lm_use_enc": False,
    "mega_use_char": False,
    "use_bert_input": False,
    "ling_labels": ["tone"],
    "ling_label_dict_size": [19],
    "use_pos_embed": False,
    "use_post_ln": False,
    "lm_bias": True,
    "use_spk_embed": False,
    "use_spk_id": False,
    "use_spk_enc": False,
    "max_tokens": 10000,
    "infer_top_k": None,
}

SENTENCES = {"en": "Hello there, this is a test.", "zh": "你好，这是一个测试。"}


def half(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors as float16 (contiguous, detached), others unchanged."""
    return {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in state_dict.items()
    }


def save_ckpt(path: Path, name: str, state_dict: dict[str, torch.Tensor]) -> None:
    """Upstream's checkpoint format: `load_ckpt` reads checkpoint["state_dict"][name]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {name: state_dict}, "global_step": 0}, path)


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def write_reference(weights: Path, seconds: float) -> tuple[Path, Path]:
    """A non-silent 24 kHz clip (a chirp plus noise) and a random [1, 25 * seconds, 32] latent."""
    rng = np.random.default_rng(SEED)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0, f1 = 150.0, 600.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    wav = 0.3 * np.sin(phase) + 0.02 * rng.standard_normal(t.size)
    wav_path = weights / "reference.wav"
    sf.write(wav_path, wav.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    latent = rng.standard_normal((1, round(seconds * LATENT_RATE), LATENT_DIM)).astype(np.float32)
    npy_path = weights / "reference.npy"
    np.save(npy_path, latent)
    return wav_path, npy_path


def build_dit(ckpt_root: Path) -> None:
    """Full-size random `Diffusion()`; its config.yaml becomes upstream's global hparams."""
    from tts.modules.llm_dit.dit import Diffusion

    folder = ckpt_root / "diffusion_transformer"
    write_yaml(folder / "config.yaml", DIT_CONFIG)
    save_ckpt(folder / "model_only_last.ckpt", "dit", half(Diffusion().state_dict()))


def build_aligner(ckpt_root: Path) -> None:
    """Full-size `Whisper()` whose decoder emits ALIGN_TOKENS whatever the audio (module docstring)."""
    from tts.modules.aligner.whisper_small import Whisper

    model = Whisper()
    decoder = model.decoder
    with torch.no_grad():
        decoder.token_embedding.weight.zero_()
        for block in decoder.blocks:
            for layer in (block.attn.out, block.cross_attn.out, block.mlp[2]):
                layer.weight.zero_()
                layer.bias.zero_()
        decoder.ln.weight.fill_(1.0)
        decoder.ln.bias.zero_()
        # Position t holds e_t; after LayerNorm that is ~22.6 * e_t, so out_proj row ALIGN_TOKENS[t]
        # gets logit ~22.6 and every other token ~0.
        decoder.positional_embedding.zero_()
        decoder.out_proj.weight.zero_()
        decoder.out_proj.bias.zero_()
        for position, token in enumerate(ALIGN_TOKENS):
            decoder.positional_embedding[position, position] = 1.0
            decoder.out_proj.weight[token, position] = 1.0
    folder = ckpt_root / "aligner_lm"
    write_yaml(folder / "config.yaml", ALIGNER_CONFIG)
    save_ckpt(folder / "model_only_last.ckpt", "model", half(model.state_dict()))


def build_duration_lm(ckpt_root: Path, upstream: Path) -> None:
    """Tiny `ARDurPredictor` (size from DURATION_CONFIG) that always predicts DUR_CODE."""
    from tts.modules.ar_dur.ar_dur_predictor import ARDurPredictor
    from tts.utils.text_utils.text_encoder import TokenTextEncoder

    dict_path = upstream / "tts" / "utils" / "text_utils" / "dict.json"
    phones = json.loads(dict_path.read_text(encoding="utf-8-sig"))["phone"]
    ph_dict_size = len(TokenTextEncoder(None, vocab_list=phones, replace_oov="<UNK>"))
    hp = {**DURATION_CONFIG, "frames_multiple": DIT_CONFIG["frames_multiple"]}
    model = ARDurPredictor(
        hp,
        hp["dur_txt_hs"],
        hp["dur_model_hidden_size"],
        hp["dur_model_layers"],
        ph_dict_size,
        hp["dur_code_size"],
        use_rot_embed=hp["use_rot_embed"],
    )
    with torch.no_grad():
        model.project_out_dim.weight.zero_()
        model.project_out_dim.bias.zero_()
        model.project_out_dim.bias[DUR_CODE] = 10.0
    folder = ckpt_root / "duration_lm"
    write_yaml(folder / "config.yaml", DURATION_CONFIG)
    save_ckpt(folder / "model_only_last.ckpt", "dur_model", model.state_dict())


def build_g2p_tokenizer(folder: Path) -> int:
    """Byte-level tokenizer (no merges: one token per UTF-8 byte) plus upstream's special tokens.

    Returns the id of <Reserved_TTS_0>, upstream's `speech_start_idx`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<BOT>", "<BOS>"] + [f"<Reserved_TTS_{i}>" for i in range(G2P_RESERVED)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.save_pretrained(folder)
    return tok.token_to_id("<Reserved_TTS_0>")


def build_g2p(ckpt_root: Path) -> None:
    """Tiny Qwen2 causal LM that answers any prompt with G2P_PHONES then its end token."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = ckpt_root / "g2p"
    start = build_g2p_tokenizer(folder)
    vocab = start + G2P_RESERVED
    config = Qwen2Config(
        vocab_size=(vocab + 63) // 64 * 64,
        hidden_size=G2P_HIDDEN,
        intermediate_size=2 * G2P_HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=start + G2P_END,
        pad_token_id=start + G2P_END,
    )
    model = Qwen2ForCausalLM(config)
    # The chain of token ids: upstream's prompt ends in <Reserved_TTS_145>; each one predicts the next.
    chain = [start + p for p in [SIL, *G2P_PHONES, G2P_END]]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        # RMSNorm(e_i) = 8 * e_i, so the successor's logit is 8 and every other logit 0.
        for state, (token, successor) in enumerate(itertools.pairwise(chain)):
            model.model.embed_tokens.weight[token, state] = 1.0
            model.lm_head.weight[successor, state] = 1.0
    model.save_pretrained(folder, safe_serialization=True)


def build_wavvae(ckpt_root: Path) -> None:
    """Full-size random `WavVAE_V3` decoder side only (decoder.ckpt: upstream's decoder-only mode)."""
    from tts.modules.wavvae.decoder.wavvae_v3 import WavVAE_V3

    folder = ckpt_root / "wavvae"
    write_yaml(folder / "config.yaml", WAVVAE_CONFIG)
    model = WavVAE_V3(hparams=WAVVAE_CONFIG)
    with torch.no_grad():
        # The last layer is a 1x1 Conv1d (use_tanh false) whose random bias (~0.8) dwarfs the random
        # decoder's tiny output (std ~3e-4): the clip would be a DC offset. Make it the identity.
        last = model.decoder.model_up[-1]
        last.weight.fill_(1.0)
        last.bias.zero_()
    state = model.state_dict()
    decoder = {k: v for k, v in state.items() if not k.startswith(("encoder.", "proj_to_z."))}
    save_ckpt(folder / "decoder.ckpt", "model_gen", half(decoder))


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def build(weights: Path, upstream: Path, seconds: float = 1.0) -> dict[str, Any]:
    """Write the whole fixture under `weights`; returns what the JSON line prints."""
    clock = Clock()
    upstream = upstream.resolve()
    root = weights / "MegaTTS3"
    ckpt_root = root / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    code = root / "code"
    if code.is_symlink() or code.exists():
        code.unlink()
    code.symlink_to(upstream, target_is_directory=True)
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))

    torch.manual_seed(SEED)
    sizes = {}
    for name, step in [
        ("diffusion_transformer", lambda: build_dit(ckpt_root)),
        ("aligner_lm", lambda: build_aligner(ckpt_root)),
        ("duration_lm", lambda: build_duration_lm(ckpt_root, upstream)),
        ("g2p", lambda: build_g2p(ckpt_root)),
        ("wavvae", lambda: build_wavvae(ckpt_root)),
    ]:
        step()
        sizes[name] = round(folder_mb(ckpt_root / name), 1)
    wav, npy = write_reference(weights, seconds)
    return {
        "code": str(code),
        "ckpt_root": str(ckpt_root),
        "reference_wav": str(wav),
        "reference_npy": str(npy),
        "reference_seconds": seconds,
        "latent_frames": round(seconds * LATENT_RATE),
        "sizes_mb": sizes,
        "total_mb": round(sum(sizes.values()), 1),
        "build": clock.lap(),
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def new_mel_frames(first_chunk: bool = True) -> int:
    """Mel frames `dur_pred` gives a chunk (module docstring): first phone 8 (the first chunk) or 64
    ("sil" of a later chunk), the middle ones DUR_CODE - 1, the last ("。") 64..70, the sum padded up
    to a multiple of 8."""
    middle = (len(G2P_PHONES) - 1) * (DUR_CODE - 1)
    first = 8 if first_chunk else 64
    low, high = first + middle + 64, first + middle + 70
    frames = -(-low // 8) * 8
    assert frames == -(-high // 8) * 8, "the last phone's disturbance would change the length"
    return frames


def expected_samples(mel2ph_ref_frames: int, latent_frames: int, chunks: int = 1) -> int:
    """Samples of the WAV `forward` returns for a text of `chunks` chunks (module docstring)."""
    hop = DIT_CONFIG["vae_stride"] * DIT_CONFIG["hop_size"]  # 960 samples per latent frame
    per_chunk = [
        ((mel2ph_ref_frames + new_mel_frames(first_chunk=i == 0)) // DIT_CONFIG["vae_stride"] - latent_frames)
        * hop
        for i in range(chunks)
    ]
    return sum(per_chunk) - (chunks - 1) * int(SAMPLE_RATE * 0.16)


class Clock:
    """Wall and CPU (user + system, all threads) seconds since the last `lap`."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        result = {"wall_s": round(wall - self.wall, 1), "cpu_s": round(cpu - self.cpu, 1)}
        self.wall, self.cpu = wall, cpu
        return result


def check(weights: Path) -> Iterator[dict[str, Any]]:
    """Run what the studio's worker runs, on the fixture: yields one dict for loading + preprocess,
    then one per sentence. Raises if an output is empty, not finite or not the expected length."""
    import ffmpeg

    clock = Clock()
    ffmpeg.add_to_path()  # pydub calls ffprobe/ffmpeg from PATH
    code = weights / "MegaTTS3" / "code"
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    from tts.infer_cli import MegaTTS3DiTInfer

    model = MegaTTS3DiTInfer(
        device="cpu", ckpt_root=str(weights / "MegaTTS3" / "checkpoints"), precision=torch.float16
    )
    load = clock.lap()
    wav_path, npy_path = weights / "reference.wav", weights / "reference.npy"
    ctx = model.preprocess(wav_path.read_bytes(), latent_file=str(npy_path))
    mel_frames, latent_frames = int(ctx["mel2ph_ref"].shape[1]), int(ctx["vae_latent"].shape[1])
    yield {
        "step": "load+preprocess",
        "load": load,
        "preprocess": clock.lap(),
        "ph_ref": ctx["ph_ref"][0].tolist(),
        "mel2ph_ref_frames": mel_frames,
        "latent_frames": latent_frames,
        "peak_rss_mb": peak_rss_mb(),
    }
    for language, text in SENTENCES.items():
        wav_bytes = model.forward(ctx, text, time_step=4, p_w=1.6, t_w=2.5, dur_disturb=0.1, dur_alpha=1.0)
        forward = clock.lap()
        audio, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
        expected = expected_samples(mel_frames, latent_frames)
        if audio.size == 0 or not np.isfinite(audio).all() or audio.size != expected:
            raise SystemExit(f"bad output for {language}: {audio.size} samples, expected {expected}")
        yield {
            "step": "forward",
            "language": language,
            "text": text,
            "sample_rate": rate,
            "samples": int(audio.size),
            "seconds": round(audio.size / rate, 3),
            "rms": round(float(np.sqrt(np.mean(audio**2))), 4),
            "forward": forward,
            "peak_rss_mb": peak_rss_mb(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path, help="the folder to write (WEIGHTS_DIR)")
    parser.add_argument(
        "--upstream",
        type=Path,
        default=Path(os.environ.get("MEGATTS3_UPSTREAM", "/work/shared/upstream/MegaTTS3")),
        help="upstream's MegaTTS3 folder (holds tts/infer_cli.py)",
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="reference clip length")
    parser.add_argument("--check", action="store_true", help="then run upstream's inference on it")
    args = parser.parse_args()
    if not (args.upstream / "tts" / "infer_cli.py").is_file():
        parser.error(f"{args.upstream} does not hold tts/infer_cli.py")
    args.weights.mkdir(parents=True, exist_ok=True)
    print(json.dumps(build(args.weights, args.upstream, args.seconds)), flush=True)
    if args.check:
        started = time.perf_counter()
        for result in check(args.weights):
            result["check_wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
