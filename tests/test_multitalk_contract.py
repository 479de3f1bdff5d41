"""The MultiTalk adapter against upstream's own code, on the CPU: no GPU, no weights, no MultiTalk environment.

generate_multitalk.py cannot be imported here (it imports wan's model code, flash_attn, xfuser, kokoro,
pyloudnorm...), so the test compiles the pieces it needs out of the unchanged clone at
../shared/upstream/MultiTalk and runs them as they are (tracebacks point at upstream's lines):

- `_parse_args` (which calls `_validate_args`), with `str2bool` from wan/utils/utils.py and the real
  wan/configs package (WAN_CONFIGS, SIZE_CONFIGS, SUPPORTED_SIZES; easydict by a dict stand-in where the
  venv lacks it), on every command line the adapter builds: 1, 2, 4, 8 GPUs x each preset it allows;
- the asserts of `generate()` with the `if`s around them (nothing else of it): no FSDP or sequence
  parallelism in one process, ulysses x ring == world size, the 14B config's num_heads % ulysses == 0;
- `generate()`'s input-JSON block (`with open(args.input_json) ...`) on the JSON the adapter writes, with
  only the wav2vec model (`custom_init`, `get_embedding`) and pyloudnorm's `loudness_norm` stood in for,
  then `MultiTalkPipeline.generate`'s reads of that dict: prompt, image, embeddings, the people's masks.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from engines.base import EngineState
from engines.gpu import GpuAllocator, GpuDevice
from engines.multitalk import NUM_HEADS, PRESETS, WAN_INDEX, WAV2VEC, MultiTalkEngine, MultiTalkRequest

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream" / "MultiTalk"
pytestmark = pytest.mark.skipif(
    not UPSTREAM.is_dir(), reason=f"MultiTalk's upstream code is not at {UPSTREAM}"
)
BOXES = [(0, 20, 320, 360), (320, 10, 640, 350)]  # (left, top, right, bottom) on the 640x360 image
Code = dict[str, Any]


class EasyDict(dict):  # type: ignore[type-arg]
    """easydict.EasyDict's behaviour that wan/configs uses (a dict read and written by attribute)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


# ---- upstream's code, compiled from its source -------------------------------------------------------
def _tree(relative: str) -> ast.Module:
    return ast.parse((UPSTREAM / relative).read_text(encoding="utf-8"))


def _function(tree: ast.AST, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def _find(function: ast.FunctionDef, start: str) -> ast.stmt:
    """The first statement of `function` (outermost first) whose source starts with `start`."""
    for node in ast.walk(function):
        if isinstance(node, ast.stmt) and node is not function and ast.unparse(node).startswith(start):
            return node
    raise LookupError(f"upstream's {function.name}() has no statement `{start}` any more")


def _compile(nodes: list[ast.stmt], relative: str) -> types.CodeType:
    return compile(ast.fix_missing_locations(ast.Module(nodes, [])), str(UPSTREAM / relative), "exec")


def _asserts(statements: list[ast.stmt]) -> list[ast.stmt]:
    """Only the asserts among `statements`, with the `if`s around them."""
    kept: list[ast.stmt] = []
    for node in statements:
        if isinstance(node, ast.Assert):
            kept.append(node)
        elif isinstance(node, ast.If) and (body := _asserts(node.body)) + (orelse := _asserts(node.orelse)):
            kept.append(ast.copy_location(ast.If(node.test, body or [ast.Pass()], orelse), node))
    return kept


def _wan_configs() -> types.ModuleType:
    """wan/configs imported for real, as a package of its own (wan/__init__ would load the model code)."""
    name, folder = "_upstream_multitalk_wan_configs", UPSTREAM / "wan" / "configs"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, name, module)
        if importlib.util.find_spec("easydict") is None:
            patch.setitem(sys.modules, "easydict", types.SimpleNamespace(EasyDict=EasyDict))
        patch.setenv("TOKENIZERS_PARALLELISM", os.environ.get("TOKENIZERS_PARALLELISM", "false"))
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def upstream() -> Code:
    configs = _wan_configs()
    script, pipeline = _tree("generate_multitalk.py"), _tree("wan/multitalk.py")
    code: Code = {
        "argparse": argparse,
        "random": random,
        **{name: getattr(configs, name) for name in ("WAN_CONFIGS", "SIZE_CONFIGS", "SUPPORTED_SIZES")},
    }
    exec(_compile([_function(_tree("wan/utils/utils.py"), "str2bool")], "wan/utils/utils.py"), code)
    exec(
        _compile([_function(script, n) for n in ("_validate_args", "_parse_args")], "generate_multitalk.py"),
        code,
    )
    audio = [_function(script, n) for n in ("audio_prepare_single", "audio_prepare_multi")]
    generate, pipeline_generate = _function(script, "generate"), _function(pipeline, "generate")
    asserts = _asserts(generate.body)
    assert "args.ulysses_size * args.ring_size == world_size" in ast.unparse(asserts)
    assert "cfg.num_heads % args.ulysses_size == 0" in ast.unparse(asserts)
    reads = [
        "input_prompt = input_data['prompt']",
        "cond_file_path = input_data['cond_image']",
        "cond_image = Image.open(cond_file_path)",
        "src_h, src_w = (cond_image.height, cond_image.width)",
        "audio_embedding_path_1 = input_data['cond_audio']['person1']",
        "if len(input_data['cond_audio']) == 1:",
        "full_audio_embs = []",
        "audio_embedding_paths = [audio_embedding_path_1",
        "for human_idx in range(HUMAN_NUMBER):",
        "assert len(full_audio_embs) == HUMAN_NUMBER",
        "human_masks = []",
        "if HUMAN_NUMBER == 1:",
    ]
    return code | {
        "configs": configs,
        "parallel_asserts": _compile(asserts, "generate_multitalk.py"),
        "audio_functions": _compile(audio, "generate_multitalk.py"),
        "read_input_json": _compile([_find(generate, "with open(args.input_json")], "generate_multitalk.py"),
        "pipeline_reads": _compile([_find(pipeline_generate, s) for s in reads], "wan/multitalk.py"),
    }


# ---- the adapter's side ------------------------------------------------------------------------------
def engine_with_weights(weights: Path, gpus: int) -> MultiTalkEngine:
    """The layout the adapter's status requires (empty files), checked ready."""
    engine = MultiTalkEngine(
        weights, GpuAllocator([GpuDevice(i, "H200", 143_000, 140_000) for i in range(gpus)])
    )
    for requirement in engine.info.requirements:
        if requirement.kind == "weights":
            (weights / requirement.target).parent.mkdir(parents=True, exist_ok=True)
            (weights / requirement.target).touch()
    (weights / WAN_INDEX).write_text(json.dumps({"weight_map": {"audio_proj.x": "multitalk.safetensors"}}))
    assert engine.status().state == EngineState.READY
    return engine


@pytest.fixture
def media(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A 640x360 image and two 4-second tracks at 16 kHz."""
    image = tmp_path / "two.png"
    Image.new("RGB", (640, 360), (90, 120, 150)).save(image)
    tracks = [tmp_path / f"person{n}.wav" for n in (1, 2)]
    rng = np.random.default_rng(0)
    for track in tracks:
        sf.write(track, (0.1 * rng.standard_normal(64_000)).astype(np.float32), 16_000)
    return image, tracks


def parse(
    upstream: Code, command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """Upstream's `_parse_args()` (and so `_validate_args`) on the command line, as its `__main__` runs it."""
    monkeypatch.setattr(sys, "argv", command)
    try:
        return upstream["_parse_args"]()
    except SystemExit:
        pytest.fail(f"upstream's parser refused {command[1:]}:\n{capsys.readouterr().err}")


# ---- tests ---------------------------------------------------------------------------------------------
LAYOUTS = [(g, p) for g in (1, 2, 4, 8) for p in PRESETS if p != "low-vram" or g == 1]


@pytest.mark.parametrize(("gpus", "preset"), LAYOUTS)
def test_upstream_parses_validates_and_asserts_every_command_line(
    upstream: Code,
    media: tuple[Path, list[Path]],
    tmp_path: Path,
    gpus: int,
    preset: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = engine_with_weights(tmp_path / "weights", gpus)
    cfg = upstream["configs"].WAN_CONFIGS["multitalk-14B"]
    assert cfg.num_heads == NUM_HEADS  # the adapter's own head count is the 14B config's
    image, tracks = media
    variants = [("480p", "streaming", 81, None), ("720p", "clip", 41, 8)]
    for resolution, mode, frame_num, steps in variants:
        request = MultiTalkRequest(
            "Two friends talk.", image, tracks, BOXES, resolution, steps, preset=preset
        )
        request = replace(request, mode=mode, frame_num=frame_num)
        command = engine.command(request, tmp_path / "in.json", tmp_path / "job" / "multitalk", gpus)
        args = parse(upstream, command, monkeypatch, capsys)
        # Every flag is upstream's own name, not an abbreviation argparse happened to accept.
        assert {f.removeprefix("--") for f in command if f.startswith("--")} <= set(vars(args))
        # generate()'s asserts, on what it parsed: AssertionError as in upstream's run.
        exec(upstream["parallel_asserts"], {"args": args, "world_size": gpus, "cfg": cfg})
        assert (args.task, args.size, args.mode) == ("multitalk-14B", f"multitalk-{resolution[:-1]}", mode)
        assert args.size in upstream["SUPPORTED_SIZES"][args.task] and args.frame_num == frame_num
        assert args.sample_steps == (steps or {"fast": 20}.get(preset, 40)) and args.base_seed == 42
        assert args.use_teacache == (preset != "quality")
        assert args.num_persistent_param_in_dit == (0 if preset == "low-vram" else None)
        sharded = gpus > 1
        assert (args.ulysses_size, args.ring_size, args.dit_fsdp, args.t5_fsdp) == (gpus, 1, sharded, sharded)
        # What upstream loads from the folders it is given is in the layout the status requires.
        for name in (cfg.t5_checkpoint, cfg.vae_checkpoint, cfg.clip_checkpoint, "config.json"):
            assert (Path(args.ckpt_dir) / name).is_file(), name
        for name in (cfg.t5_tokenizer, cfg.clip_tokenizer):  # tokenizer folders, read by name
            assert (Path(args.ckpt_dir) / name).exists(), name
        assert (Path(args.wav2vec_dir) / "config.json").is_file()


@pytest.mark.parametrize("people", ["para", "add", "one"])
def test_upstream_reads_the_input_json_the_adapter_writes(
    upstream: Code,
    media: tuple[Path, list[Path]],
    tmp_path: Path,
    people: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = engine_with_weights(tmp_path / "weights", 1)
    image, tracks = media
    if people == "one":
        request = MultiTalkRequest("A woman sings.", image, tracks[:1])
    else:
        request = MultiTalkRequest("Two friends talk.", image, tracks, BOXES, audio_type=people)
    input_json = engine.build_input_json(request, tmp_path / "job")
    args = parse(
        upstream, engine.command(request, input_json, tmp_path / "job" / "multitalk", 1), monkeypatch, capsys
    )
    seen: dict[str, Any] = {"speech": []}

    def custom_init(device: str, wav2vec: str) -> tuple[None, None]:  # loads the wav2vec weights
        seen["wav2vec"] = wav2vec
        return None, None

    def get_embedding(speech: np.ndarray, *_: Any, sr: int = 16000, **__: Any) -> torch.Tensor:  # wav2vec
        seen["speech"].append(len(speech))
        return torch.zeros(int(len(speech) / sr * 25), 1)  # 25 embeddings a second, as upstream's

    block: Code = upstream | {"args": args, "json": json, "os": os, "np": np, "sf": sf, "torch": torch}
    block |= {"librosa": librosa, "custom_init": custom_init, "get_embedding": get_embedding}
    block["loudness_norm"] = lambda audio, sr=16000, lufs=-23: audio  # pyloudnorm: not in the studio's venv
    exec(upstream["audio_functions"], block)  # audio_prepare_multi/_single, reading their globals here
    exec(upstream["read_input_json"], block)
    data = block["input_data"]
    assert seen["wav2vec"] == str(engine.root / WAV2VEC) and Path(args.audio_save_dir).is_dir()
    assert seen["speech"] == {"para": [64_000] * 2, "add": [128_000] * 2, "one": [64_000]}[people]
    assert sf.info(data["video_audio"]).frames == max(seen["speech"])

    # MultiTalkPipeline.generate as generate() calls it (face_scale: its default, for boxless pairs).
    reads: Code = {"input_data": data, "frame_num": args.frame_num, "face_scale": 0.05}
    exec(upstream["pipeline_reads"], reads := reads | {"Image": Image, "torch": torch, "os": os})
    assert reads["input_prompt"] == request.prompt and (reads["src_w"], reads["src_h"]) == (640, 360)
    masks = reads["human_masks"]
    if people == "one":
        assert len(masks) == 3 and all(bool(m.all()) for m in masks)
        return
    assert len(masks) == 3  # person1, person2, background
    for mask, (left, top, right, bottom) in zip(masks, BOXES, strict=False):  # each person is in its box
        assert mask.shape == (360, 640) and bool(mask[top:bottom, left:right].all())
        assert int(mask.sum()) == (bottom - top) * (right - left)
