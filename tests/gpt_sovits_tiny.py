"""Tiny random-weight GPT-SoVITS v2 models, laid out on disk the way GPT-SoVITS's own scripts read them,
for tests that run upstream's dataset scripts, trainers and inference on CPU.

    <gpt-sovits env python> tests/gpt_sovits_tiny.py OUT_DIR [--upstream DIR] [--code]

Runs inside GPT-SoVITS's own environment (torch 2.6.0, transformers 4.x, onnx); it imports nothing from
the studio. The SoVITS and GPT models are instances of the UPSTREAM classes (`module.models` and
`AR.models.t2s_lightning_module`), imported from DIR (default /work/shared/upstream/GPT-SoVITS, or
$GPT_SOVITS_UPSTREAM), which is only read. Paths are relative to OUT_DIR, i.e. to the code folder the
scripts run in (they read most of these paths relative to the working directory):

  GPT_SoVITS/pretrained_models/chinese-roberta-wwm-ext-large/  BertForMaskedLM + BertTokenizer files
  GPT_SoVITS/pretrained_models/chinese-hubert-base/            HubertModel + preprocessor_config.json
  GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/         s2G2333k.pth, s2D2333k.pth (SoVITS G, D),
                                  s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt (GPT)
  GPT_SoVITS/text/G2PWModel/      a tiny g2pW ONNX model and its tables (chinese2.py would download it)
  GPT_SoVITS/configs/s2.json, GPT_SoVITS/configs/s1longer-v2.yaml   upstream's configs, made tiny
                                  (s2.json also trains on 1280-sample slices, batch 20, fp32: see TINY_S2_TRAIN)
  nltk_data/                      cmudict + a tiny English POS tagger for g2p_en (set NLTK_DATA to it:
                                  g2p_en would download both from the internet at import)

With --code, OUT_DIR first gets a writable copy of DIR, so it is a complete code folder (the scripts
write caches next to their own files and temporary files into the working directory). It prints one
JSON line (`build()` returns the same dict): the paths above, "version" and "seconds".

Sizes are upstream's configs made small where upstream reads the size from a config; what upstream
hard-codes stays: BERT hidden 1024 (GPT's `bert_proj` is Linear(1024, ...)), HuBERT hidden 768 (SoVITS's
`ssl_dim`), SoVITS hidden 192 and gin 512 (its MRTE block), 1025 spectrogram bins and a 640 hop, the GPT's
1025 semantic tokens and 732 phonemes, and the whole MultiPeriodDiscriminator (no config: 46.7M
parameters, stored in fp16 like the release, 90 MB). The BERT vocabulary is built offline: special
tokens, ASCII, "##" pieces, CJK punctuation and the 3755 GB2312 level-1 hanzi (every common character).

Details of upstream's loaders that shape the files:
* `prepare_datasets/3-get-semantic.py` guesses the SoVITS version from the size of s2G: under 82978 KiB
  means v1, whose text embedding (322 symbols) cannot load v2 weights. s2G therefore carries a "padding"
  entry (a uint8 tensor no loader reads) up to 83014 KiB, the size upstream notes for v2 weights.
* The SoVITS quantizer's codebook is stored initialised (`inited` 1, random codes), as in a trained
  model: a fresh one runs k-means on its first batch through torch.distributed, which the dataset
  script 3-get-semantic.py never initialises ("Default process group has not been initialized").
* The checkpoints hold their config ("config" key) as the released ones do: TTS_infer_pack builds the
  models from it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_UPSTREAM = Path(os.environ.get("GPT_SOVITS_UPSTREAM", "/work/shared/upstream/GPT-SoVITS"))
VERSION = "v2"
PRETRAINED = "GPT_SoVITS/pretrained_models"
BERT = f"{PRETRAINED}/chinese-roberta-wwm-ext-large"
HUBERT = f"{PRETRAINED}/chinese-hubert-base"
V2_PRETRAINED = f"{PRETRAINED}/gsv-v2final-pretrained"
S2G = f"{V2_PRETRAINED}/s2G2333k.pth"
S2D = f"{V2_PRETRAINED}/s2D2333k.pth"
S1 = f"{V2_PRETRAINED}/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
G2PW = "GPT_SoVITS/text/G2PWModel"
NLTK_DATA = "nltk_data"  # not read by upstream from here: run its scripts with NLTK_DATA=<OUT>/nltk_data
S2_CONFIG = "GPT_SoVITS/configs/s2.json"
S1_CONFIG = "GPT_SoVITS/configs/s1longer-v2.yaml"

# 3-get-semantic.py: v1 below this s2G size; v2 up to 100 MiB. 83014 KiB is upstream's "v2weights" size.
V1_MAX_BYTES = 82978 * 1024
S2G_BYTES = 83014 * 1024

# GPT_SoVITS/configs/s1longer-v2.yaml as published (the upstream snapshot may lack it: configs/.gitignore
# ignores *.yaml and the file is only force-added in git). Used when DIR has no such file.
S1LONGER_V2 = {
    "train": {
        "seed": 1234,
        "epochs": 20,
        "batch_size": 8,
        "save_every_n_epoch": 1,
        "precision": "16-mixed",
        "gradient_clip": 1.0,
    },
    "optimizer": {
        "lr": 0.01,
        "lr_init": 0.00001,
        "lr_end": 0.0001,
        "warmup_steps": 2000,
        "decay_steps": 40000,
    },
    "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": 1024},
    "model": {
        "vocab_size": 1025,
        "phoneme_vocab_size": 732,
        "embedding_dim": 512,
        "hidden_dim": 512,
        "head": 16,
        "linear_units": 2048,
        "n_layer": 24,
        "dropout": 0,
        "EOS": 1024,
        "random_bert": 0,
    },
    "inference": {"top_k": 15},
}

# Model sizes that replace upstream's (the rest of each config is upstream's).
TINY_S2_MODEL = {
    "inter_channels": 32,
    "filter_channels": 64,
    "n_layers": 2,
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
}
# Training settings that replace upstream's in configs/s2.json (webui.py copies this file into the
# trainer's config and overrides batch_size, epochs and fp16_run, but never segment_size). s2_train.py
# runs the 46.7M-parameter MultiPeriodDiscriminator (no size config) on a segment_size slice of every
# item, and an epoch is always >= 100 items, so upstream's 20480 samples cost minutes per epoch on a CPU;
# 1280 (2 frames of 640) is the least that works: mel_spectrogram_torch reflect-pads the slice by 704.
TINY_S2_TRAIN = {"segment_size": 1280, "batch_size": 20, "fp16_run": False}
TINY_S1_MODEL = {"embedding_dim": 64, "hidden_dim": 64, "head": 4, "linear_units": 128, "n_layer": 2}

# A few polyphonic characters with their bopomofo readings (the first is the one the tiny g2pW picks).
G2PW_POLYPHONIC = {
    "行": ["ㄒㄧㄥ2", "ㄏㄤ2"],
    "了": ["ㄌㄜ5", "ㄌㄧㄠ3"],
    "长": ["ㄔㄤ2", "ㄓㄤ3"],
    "还": ["ㄏㄞ2", "ㄏㄨㄢ2"],
    "为": ["ㄨㄟ4", "ㄨㄟ2"],
    "好": ["ㄏㄠ3", "ㄏㄠ4"],
    "的": ["ㄉㄜ5", "ㄉㄧ4"],
    "得": ["ㄉㄜ2", "ㄉㄟ3"],
}
G2PW_MONOPHONIC = {"你": "ㄋㄧ3", "我": "ㄨㄛ3", "是": "ㄕ4"}
BOPOMOFO_TO_PINYIN = {
    "ㄒㄧㄥ": "xing",
    "ㄏㄤ": "hang",
    "ㄌㄜ": "le",
    "ㄌㄧㄠ": "liao",
    "ㄔㄤ": "chang",
    "ㄓㄤ": "zhang",
    "ㄏㄞ": "hai",
    "ㄏㄨㄢ": "huan",
    "ㄨㄟ": "wei",
    "ㄏㄠ": "hao",
    "ㄉㄜ": "de",
    "ㄉㄧ": "di",
    "ㄉㄟ": "dei",
    "ㄋㄧ": "ni",
    "ㄨㄛ": "wo",
    "ㄕ": "shi",
}


def _upstream_imports(upstream: Path) -> None:
    """Put upstream's code on sys.path as its scripts expect (the code folder and GPT_SoVITS/)."""
    for path in (upstream, upstream / "GPT_SoVITS"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def tiny_s2_config(upstream: Path) -> dict[str, Any]:
    """Upstream's configs/s2.json with the tiny model sizes and a CPU-sized training slice (TINY_S2_TRAIN).

    No "version" in "model": 3-get-semantic.py passes its own `version=` next to `**hps.model` (the
    trainer's config, which webui.py writes, adds it).
    """
    config = json.loads((upstream / S2_CONFIG).read_text(encoding="utf-8"))
    config["model"].update(TINY_S2_MODEL)
    config["train"].update(TINY_S2_TRAIN)
    return config


def tiny_s1_config(upstream: Path) -> dict[str, Any]:
    """Upstream's configs/s1longer-v2.yaml (or the published copy above) with the tiny model sizes."""
    import yaml

    path = upstream / S1_CONFIG
    config = (
        yaml.safe_load(path.read_text(encoding="utf-8"))
        if path.is_file()
        else json.loads(json.dumps(S1LONGER_V2))
    )
    config["model"].update(TINY_S1_MODEL)
    return config


def bert_vocab() -> list[str]:
    """A WordPiece vocabulary built offline that covers ASCII, CJK punctuation and all common hanzi."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ascii_chars = [chr(code) for code in range(33, 127) if not chr(code).isupper()]
    pieces = [f"##{char}" for char in "abcdefghijklmnopqrstuvwxyz0123456789"]
    punctuation = list("，。！？、；：（）《》“”‘’…—·「」『』【】～")
    hanzi = []
    for row in range(0xB0, 0xD8):  # GB2312 level 1: rows 16-55, 3755 characters by frequency of use
        for col in range(0xA1, 0xFF):
            try:
                hanzi.append(bytes([row, col]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    vocab: list[str] = []
    for token in [*specials, *ascii_chars, *pieces, *punctuation, *hanzi]:
        if token not in vocab:
            vocab.append(token)
    return vocab


def build_bert(target: Path) -> None:
    """chinese-roberta-wwm-ext-large made tiny: BertForMaskedLM, 2 layers, hidden 1024, small FFN."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    target.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab()
    (target / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=1024,
        num_hidden_layers=2,
        num_attention_heads=16,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    BertForMaskedLM(config).eval().save_pretrained(target)
    BertTokenizer(str(target / "vocab.txt"), do_lower_case=True).save_pretrained(target)


def build_hubert(target: Path) -> None:
    """chinese-hubert-base made tiny: the real 320-sample stride, hidden 768, 2 layers, narrow convs."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
    )
    HubertModel(config).eval().save_pretrained(target)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(target)


def build_g2pw(target: Path, vocab_size: int) -> None:
    """A g2pW folder as chinese2.py reads it: tables plus a tiny ONNX model with g2pW's inputs/output.

    probs = softmax(mean of token/type embeddings + position and character embeddings, masked to the
    query character's readings); the character embedding favours each character's first reading.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    target.mkdir(parents=True, exist_ok=True)
    rows = [(char, reading) for char, readings in G2PW_POLYPHONIC.items() for reading in readings]
    (target / "POLYPHONIC_CHARS.txt").write_text(
        "\n".join(f"{c}\t{r}" for c, r in rows) + "\n", encoding="utf-8"
    )
    (target / "MONOPHONIC_CHARS.txt").write_text(
        "\n".join(f"{c}\t{r}" for c, r in G2PW_MONOPHONIC.items()) + "\n", encoding="utf-8"
    )
    (target / "bopomofo_to_pinyin_wo_tune_dict.json").write_text(
        json.dumps(BOPOMOFO_TO_PINYIN, ensure_ascii=False), encoding="utf-8"
    )
    char_readings = {**G2PW_POLYPHONIC, **{c: [r] for c, r in G2PW_MONOPHONIC.items()}}
    (target / "char_bopomofo_dict.json").write_text(
        json.dumps(char_readings, ensure_ascii=False), encoding="utf-8"
    )
    (target / "config.py").write_text(
        'manual_seed = 1313\nmodel_source = "bert-base-chinese"\nwindow_size = 32\nuse_mask = True\n'
        "use_char_phoneme = False\nuse_conditional = True\nuse_pos = True\n",
        encoding="utf-8",
    )

    labels = sorted({reading for _, reading in rows})  # as get_phoneme_labels orders them
    chars = sorted(G2PW_POLYPHONIC)  # as the converter numbers char_ids
    rng = np.random.default_rng(0)
    weights = {
        "tok_emb": rng.normal(0, 0.1, (vocab_size, len(labels))).astype(np.float32),
        "type_emb": rng.normal(0, 0.1, (2, len(labels))).astype(np.float32),
        "pos_emb": rng.normal(0, 0.1, (512, len(labels))).astype(np.float32),
        "char_emb": rng.normal(0, 0.1, (len(chars), len(labels))).astype(np.float32),
        "big": np.array(1e4, dtype=np.float32),
        "one": np.array(1.0, dtype=np.float32),
    }
    for index, char in enumerate(chars):
        weights["char_emb"][index, labels.index(G2PW_POLYPHONIC[char][0])] += 5.0
    nodes = [
        helper.make_node("Gather", ["tok_emb", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["type_emb", "token_type_ids"], ["typ"]),
        helper.make_node("Add", ["tok", "typ"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["sentence"], axes=[1], keepdims=0),
        helper.make_node("Gather", ["pos_emb", "position_ids"], ["pos"]),
        helper.make_node("Gather", ["char_emb", "char_ids"], ["chr"]),
        helper.make_node("Add", ["sentence", "pos"], ["h1"]),
        helper.make_node("Add", ["h1", "chr"], ["logits"]),
        helper.make_node("Sub", ["phoneme_mask", "one"], ["minus"]),
        helper.make_node("Mul", ["minus", "big"], ["penalty"]),
        helper.make_node("Add", ["logits", "penalty"], ["allowed"]),
        helper.make_node("Softmax", ["allowed"], ["probs"], axis=-1),
    ]
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"))

    def tensor(name: str, kind: int, shape: list[str | int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, kind, shape)

    graph = helper.make_graph(
        nodes,
        "tiny_g2pw",
        [
            # onnx_api.py may feed one sentence for several queries (its sentence dedup): 1 or "queries"
            tensor("input_ids", TensorProto.INT64, ["sentences", "tokens"]),
            tensor("token_type_ids", TensorProto.INT64, ["sentences", "tokens"]),
            tensor("attention_mask", TensorProto.INT64, ["sentences", "tokens"]),
            tensor("phoneme_mask", TensorProto.FLOAT, ["queries", len(labels)]),
            tensor("char_ids", TensorProto.INT64, ["queries"]),
            tensor("position_ids", TensorProto.INT64, ["queries"]),
        ],
        [tensor("probs", TensorProto.FLOAT, ["queries", len(labels)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(target / "g2pW.onnx"))


def build_nltk_data(target: Path, upstream: Path) -> None:
    """The NLTK data g2p_en needs (it downloads it at import otherwise): cmudict and an English tagger.

    corpora/cmudict/cmudict is upstream's own GPT_SoVITS/text/cmudict.rep in NLTK's "WORD 1 PHONES"
    format (english.py replaces g2p_en's dictionary with that file anyway); the averaged-perceptron
    tagger is a tiny one: a small tag dictionary, no weights, "NN" for every other word.
    """
    corpus = target / "corpora" / "cmudict"
    corpus.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (upstream / "GPT_SoVITS/text/cmudict.rep").read_text(encoding="latin-1").splitlines():
        word, _, phones = line.partition("  ")
        if word and phones and not word.startswith(";;;"):
            lines.append(f"{word} 1 {phones.strip()}")
    (corpus / "cmudict").write_text("\n".join(lines) + "\n", encoding="latin-1")
    tagger = target / "taggers" / "averaged_perceptron_tagger_eng"
    tagger.mkdir(parents=True, exist_ok=True)
    tagdict = {
        "the": "DT",
        "a": "DT",
        "is": "VBZ",
        "are": "VBP",
        "this": "DT",
        "over": "IN",
        ",": ",",
        ".": ".",
    }
    files = {"weights": {}, "tagdict": tagdict, "classes": sorted({"NN", *tagdict.values()})}
    for attr, value in files.items():
        (tagger / f"averaged_perceptron_tagger_eng.{attr}.json").write_text(
            json.dumps(value), encoding="utf-8"
        )


def build_sovits(upstream: Path, s2_config: dict[str, Any], g_path: Path, d_path: Path) -> None:
    """SoVITS v2 G (SynthesizerTrn) and D (MultiPeriodDiscriminator), fp16 weights like the release."""
    import torch

    _upstream_imports(upstream)
    from module.models import MultiPeriodDiscriminator, SynthesizerTrn

    data, model = s2_config["data"], s2_config["model"]
    net_g = SynthesizerTrn(
        data["filter_length"] // 2 + 1,
        s2_config["train"]["segment_size"] // data["hop_length"],
        n_speakers=data["n_speakers"],
        version=VERSION,
        **model,
    )
    with torch.no_grad():  # a codebook that is not "inited" runs k-means through torch.distributed
        for module in net_g.modules():
            if hasattr(module, "inited") and hasattr(module, "embed"):
                module.embed.normal_()
                module.embed_avg.copy_(module.embed)
                module.cluster_size.fill_(1.0)
                module.inited.fill_(1.0)
    net_d = MultiPeriodDiscriminator(model["use_spectral_norm"], version=VERSION)
    g_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint: dict[str, Any] = {
        "weight": {key: value.half() for key, value in net_g.state_dict().items()},
        "config": s2_config,
        "info": "tiny random weights",
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    if buffer.tell() < V1_MAX_BYTES:  # see the module docstring: 3-get-semantic.py reads the size
        checkpoint["padding"] = torch.zeros(S2G_BYTES - buffer.tell() - 4096, dtype=torch.uint8)
    torch.save(checkpoint, g_path)
    size = g_path.stat().st_size
    if not V1_MAX_BYTES < size < 100 * 1024 * 1024:
        raise RuntimeError(f"{g_path} is {size} bytes: 3-get-semantic.py would not read it as v2")
    torch.save({"weight": {key: value.half() for key, value in net_d.state_dict().items()}}, d_path)


def build_gpt(upstream: Path, s1_config: dict[str, Any], path: Path) -> None:
    """The GPT (Text2SemanticLightningModule) checkpoint: fp16 "weight" and its "config"."""
    import torch

    _upstream_imports(upstream)
    from AR.models.t2s_lightning_module import Text2SemanticLightningModule

    module = Text2SemanticLightningModule(s1_config, path.parent, is_train=False)
    weights = {key: value.half() for key, value in module.state_dict().items()}
    torch.save({"weight": weights, "config": s1_config, "info": "GPT-e0"}, path)


def build(out: Path, upstream: Path = DEFAULT_UPSTREAM, copy_code: bool = False) -> dict[str, Any]:
    """Write every tiny model under `out` (see the module docstring) and return their paths."""
    import torch
    import yaml

    started = time.monotonic()
    upstream = upstream.resolve()
    if not (upstream / "GPT_SoVITS" / "s2_train.py").is_file():
        raise FileNotFoundError(f"{upstream} is not a GPT-SoVITS code folder (no GPT_SoVITS/s2_train.py)")
    out.mkdir(parents=True, exist_ok=True)
    if copy_code:
        shutil.copytree(
            upstream, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", "__pycache__")
        )
        for path in [out, *out.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    torch.manual_seed(0)

    s2_config, s1_config = tiny_s2_config(upstream), tiny_s1_config(upstream)
    (out / S2_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (out / S2_CONFIG).write_text(json.dumps(s2_config, indent=2), encoding="utf-8")
    (out / S1_CONFIG).write_text(yaml.safe_dump(s1_config, default_flow_style=False), encoding="utf-8")

    build_bert(out / BERT)
    build_hubert(out / HUBERT)
    build_g2pw(out / G2PW, vocab_size=len(bert_vocab()))
    build_nltk_data(out / NLTK_DATA, upstream)
    build_sovits(upstream, s2_config, out / S2G, out / S2D)
    build_gpt(upstream, s1_config, out / S1)
    paths = {
        "root": out,
        "bert": out / BERT,
        "hubert": out / HUBERT,
        "g2pw": out / G2PW,
        "nltk_data": out / NLTK_DATA,
        "s2G": out / S2G,
        "s2D": out / S2D,
        "s1": out / S1,
        "s2_config": out / S2_CONFIG,
        "s1_config": out / S1_CONFIG,
    }
    result: dict[str, Any] = {key: str(value) for key, value in paths.items()}
    result.update(version=VERSION, code=copy_code, seconds=round(time.monotonic() - started, 2))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (the code folder's layout)")
    parser.add_argument("--upstream", type=Path, default=DEFAULT_UPSTREAM, help="GPT-SoVITS code (only read)")
    parser.add_argument("--code", action="store_true", help="copy the upstream code into OUT first")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out, args.upstream, args.code)))


if __name__ == "__main__":
    main()
