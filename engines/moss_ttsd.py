"""MOSS-TTSD v0.5: two-speaker spoken dialogue in Chinese and English, zero-shot voice cloning, on a GPU.

MOSS-TTSD (OpenMOSS, Apache-2.0) is a Qwen3-1.7B based model (`AsteroidTTSInstruct`) that writes
8 channels of XY-Tokenizer codes (16 kHz in, 24 kHz out) for a whole `[S1]...[S2]...` script at
once, so turn-taking and prosody come from the model, not from stitching sentences. Its code is not
on PyPI: the studio runs the user's own clone of the repository, exactly as its `inference.py` does:
`generation_utils.load_model(...)` once, then `generation_utils.process_batch(...)` per script.

Expected layout (nothing is ever downloaded by the studio):

    weights/MOSS-TTSD/
    ├── code/                         git clone of github.com/OpenMOSS/MOSS-TTSD at its v0.5 release
    │   ├── generation_utils.py       load_model, process_batch
    │   ├── modeling_asteroid.py
    │   └── XY_Tokenizer/config/xy_tokenizer_config.yaml
    ├── MOSS-TTSD-v0.5/               the fnlp/MOSS-TTSD-v0.5 model repository (config.json, weights, tokenizer)
    └── XY_Tokenizer/
        ├── xy_tokenizer.ckpt         from fnlp/XY_Tokenizer_TTSD_V0
        └── xy_tokenizer_config.yaml  optional: used instead of the code's copy when present

The code folder goes on `sys.path` only while it is imported and `load_model` runs (its modules
import each other as top-level `generation_utils`, `modeling_asteroid`, `XY_Tokenizer`). Attention
is the first of flash_attention_2 -> sdpa -> eager that imports and loads; weights are bf16 on the
leased GPU. Generation runs inside `torch.cuda.device(<leased GPU>)` because the XY tokenizer's
`encode`/`decode` default to `torch.device("cuda")`, the *current* device.

What is tested here without MOSS-TTSD's code and weights (tests/test_moss_ttsd.py): status and
load errors naming every missing path, and the pure argument builders below. What is NOT tested: the
load_model / process_batch calls themselves and the real `AsteroidTTSInstruct` and `XY_Tokenizer` (their code is not installable
from a registry, and this machine has no GPU, no torchaudio and transformers 5.x where MOSS-TTSD v0.5
pins transformers==4.53.2), so speech quality, the real token layout and the real memory use are
unverified until it runs on a GPU with the files above.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

from engines.base import (
    Capability,
    Engine,
    EngineInfo,
    EngineUnavailable,
    Requirement,
    SynthesisOptions,
    UnknownVoice,
)
from engines.clone_code import cuda_scope, from_folder, on_sys_path
from engines.gpu import GpuAllocator

FOLDER = "MOSS-TTSD"
CODE = f"{FOLDER}/code"
MODEL = f"{FOLDER}/MOSS-TTSD-v0.5"
TOKENIZER = f"{FOLDER}/XY_Tokenizer"
CODE_TOKENIZER_CONFIG = f"{CODE}/XY_Tokenizer/config/xy_tokenizer_config.yaml"
TOKENIZER_CONFIG_NAME = "xy_tokenizer_config.yaml"
TOKENIZER_CHECKPOINT = f"{TOKENIZER}/xy_tokenizer.ckpt"
MODEL_REPO = "fnlp/MOSS-TTSD-v0.5"
TOKENIZER_REPO = "fnlp/XY_Tokenizer_TTSD_V0"
CODE_REPO = "https://github.com/OpenMOSS/MOSS-TTSD"

# The style prompt MOSS-TTSD's inference.py gives every script.
SYSTEM_PROMPT = (
    "You are a speech synthesizer that generates natural, realistic, and human-like conversational audio "
    "from dialogue text."
)
ATTENTION_CHAIN = ("flash_attention_2", "sdpa", "eager")
DEFAULT_VOICE = "default"  # no prompt audio: the model picks the voices
MAX_SPEAKERS = 2  # v0.5 knows <speaker1> and <speaker2> only

_CLONE = f"git clone {CODE_REPO} weights/{CODE}, at its v0.5 release"
# [S1], [1] (one digit, as MOSS-TTSD's own normalizer reads it) and `S1:` at the start of a line.
_TAG = re.compile(r"\[\s*[Ss]\s*(\d+)\s*\]|\[(\d)\]|^[ \t]*[Ss](\d+)[ \t]*[:：]", re.MULTILINE)


# ---- pure helpers: MOSS-TTSD's input format, testable without its code ------------------------------
def parse_moss_turns(script_text: str) -> list[tuple[int, str]]:
    """Speaker-numbered turns of a script tagged `[S1]`/`[S2]` (also `[1]`, or `S1:` at a line start).

    Text before the first tag, or a script with no tag at all, is speaker 1. Turns of the same
    speaker in a row merge; empty turns drop. Raises ValueError for speakers other than 1 and 2.
    """
    turns: list[tuple[int, str]] = []

    def add(speaker: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        if not 1 <= speaker <= MAX_SPEAKERS:
            raise ValueError(f"MOSS-TTSD voices two speakers, [S1] and [S2]; the script has [S{speaker}]")
        if turns and turns[-1][0] == speaker:
            turns[-1] = (speaker, f"{turns[-1][1]} {text}")
        else:
            turns.append((speaker, text))

    speaker, start = 1, 0
    for match in _TAG.finditer(script_text):
        add(speaker, script_text[start : match.start()])
        speaker, start = int(next(group for group in match.groups() if group)), match.end()
    add(speaker, script_text[start:])
    return turns


def format_moss_text(turns: Sequence[tuple[int, str]]) -> str:
    """`[S1]text[S2]text...`: the script form MOSS-TTSD's JSONL `text` field takes."""
    return "".join(f"[S{speaker}]{text}" for speaker, text in turns)


def build_batch_item(
    turns: Sequence[tuple[int, str]], prompts: Sequence[tuple[Path | str, str]] | None = None
) -> dict[str, str]:
    """One item for MOSS-TTSD's `process_batch`, as a line of its JSONL input.

    `prompts[i]` is (prompt audio, its transcript) for speaker i + 1. Two prompts: one per speaker
    (`prompt_audio_speaker1/2`, `prompt_text_speaker1/2`). One prompt: a shared reference
    (`prompt_audio`, `prompt_text`), either for a one-speaker script or a clip of both speakers whose
    transcript is itself tagged [S1]/[S2]. Audio paths are absolute (no `base_path` is given).
    """
    if not turns:
        raise ValueError("the script has no text to speak")
    item = {"text": format_moss_text(turns)}
    prompts = list(prompts or [])
    if not prompts:
        return item
    if len(prompts) > MAX_SPEAKERS:
        raise ValueError(
            f"MOSS-TTSD takes one prompt per speaker, at most {MAX_SPEAKERS}; got {len(prompts)}"
        )
    cleaned = []
    for index, (audio, transcript) in enumerate(prompts, start=1):
        transcript = " ".join(str(transcript).split())
        if not transcript:
            raise ValueError(f"prompt audio for speaker {index} needs its transcript")
        cleaned.append((str(Path(audio).absolute()), transcript))
    if len(cleaned) == MAX_SPEAKERS:
        for index, (audio, transcript) in enumerate(cleaned, start=1):
            item[f"prompt_audio_speaker{index}"] = audio
            item[f"prompt_text_speaker{index}"] = transcript
        return item
    audio, transcript = cleaned[0]
    tagged = parse_moss_turns(transcript) if _TAG.search(transcript) else None
    if tagged is None and any(speaker != 1 for speaker, _ in turns):
        raise ValueError(
            "one prompt clones one voice, but the script has two speakers: give a prompt per speaker, "
            "or one clip of both whose transcript is tagged [S1]/[S2]"
        )
    item["prompt_audio"] = audio
    item["prompt_text"] = format_moss_text(tagged) if tagged else f"[S1]{transcript}"
    return item


def prompt_paths(item: dict[str, str]) -> list[Path]:
    """The prompt audio files a batch item refers to."""
    keys = ("prompt_audio", "prompt_audio_speaker1", "prompt_audio_speaker2")
    return [Path(item[key]) for key in keys if item.get(key)]


def pick_attention(
    torch_module: Any,
    capability: tuple[int, int] | None = None,
    importer: Callable[[str], object] = importlib.import_module,
) -> str:
    """The best attention implementation here: flash_attention_2 -> sdpa -> eager.

    flash_attention_2 needs `flash_attn` to import and an Ampere or newer GPU (`capability` >= 8.0;
    None when unknown); sdpa needs torch's `scaled_dot_product_attention`.
    """
    if capability is None or capability[0] >= 8:
        try:
            importer("flash_attn")
        except Exception:  # ImportError, or a build that fails to load against this torch
            pass
        else:
            return "flash_attention_2"
    functional = getattr(getattr(torch_module, "nn", None), "functional", None)
    if hasattr(functional, "scaled_dot_product_attention"):
        return "sdpa"
    return "eager"


def attention_chain(first: str) -> list[str]:
    """`first` and every fallback after it, to try in order when loading."""
    return list(ATTENTION_CHAIN[ATTENTION_CHAIN.index(first) :])


def to_mono_float32(audio: Any, rate: int, target_rate: int) -> np.ndarray:
    """Audio from `process_batch` ([1, T] or [T] tensor or array) as float32 mono in [-1, 1] at `target_rate`."""
    if hasattr(audio, "detach"):
        audio = audio.detach().float().cpu().numpy()
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=0)  # [channels, T]
    samples = samples.reshape(-1)
    if rate != target_rate and len(samples):
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, target_rate)
        samples = resample_poly(samples, target_rate // g, rate // g).astype(np.float32)
    return np.clip(samples, -1.0, 1.0)


class MossTtsdEngine(Engine):
    """MOSS-TTSD v0.5 on a CUDA GPU: a whole [S1]/[S2] script in one pass, voices cloned from prompt audio."""

    max_speakers = 2  # v0.5 speaks [S1] and [S2]
    info = EngineInfo(
        name="moss-ttsd",
        display_name="MOSS-TTSD v0.5",
        capabilities=frozenset({Capability.DIALOGUE}),
        languages=("zh", "en"),
        license="Apache-2.0",
        sample_rate=24000,  # the XY tokenizer's output_sample_rate
        description=(
            "OpenMOSS's two-speaker dialogue model (Qwen3-1.7B + XY-Tokenizer): Chinese and English "
            "scripts spoken in one pass, voices cloned zero-shot from prompt audio; needs a GPU."
        ),
        requirements=(
            Requirement("gpu", "", "MOSS-TTSD runs in bf16 on a CUDA GPU; it books 12 GB of one"),
            Requirement("package", "torch", "pip install torch"),
            Requirement("package", "torchaudio", "pip install torchaudio, the build matching torch"),
            Requirement(
                "package", "transformers", "pip install transformers==4.53.2, as MOSS-TTSD v0.5 pins"
            ),
            Requirement("package", "yaml", "pip install PyYAML"),
            Requirement("package", "einops", "pip install einops"),
            Requirement("package", "liger_kernel", "pip install liger-kernel; MOSS-TTSD v0.5 imports it"),
            Requirement("weights", f"{CODE}/generation_utils.py", hint=_CLONE),
            Requirement(
                "weights",
                CODE_TOKENIZER_CONFIG,
                hint=f"comes with the MOSS-TTSD v0.5 code: {_CLONE}",
            ),
            Requirement(
                "weights",
                f"{MODEL}/config.json",
                hint=f"huggingface-cli download {MODEL_REPO} --local-dir weights/{MODEL} "
                "(the repository is also published as OpenMOSS-Team/MOSS-TTSD-v0.5)",
            ),
            Requirement(
                "weights",
                TOKENIZER_CHECKPOINT,
                hint=f"huggingface-cli download {TOKENIZER_REPO} xy_tokenizer.ckpt --local-dir weights/{TOKENIZER}",
            ),
        ),
        # MOSS-TTSD's Kaggle deployment notes: 5.9 GB + 1.7 MB per second of audio, 7.5 GB at 960 s.
        # Booked with room for the CUDA context, the prompt encoder and the chunked decoder.
        memory_mb=12000,
    )

    def __init__(self, weights_dir: Path, allocator: GpuAllocator) -> None:
        super().__init__(weights_dir, allocator)
        self._code: ModuleType | None = None
        self._tokenizer: Any = None
        self._model: Any = None
        self._spt: Any = None
        self.attention: str | None = None  # the implementation the model loaded with

    # ---- paths -------------------------------------------------------------------------------
    @property
    def code_dir(self) -> Path:
        return self.weights_dir / CODE

    @property
    def model_dir(self) -> Path:
        return self.weights_dir / MODEL

    @property
    def tokenizer_config(self) -> Path:
        """The XY tokenizer's yaml: a copy next to the checkpoint wins over the code's own."""
        own = self.weights_dir / TOKENIZER / TOKENIZER_CONFIG_NAME
        return own if own.exists() else self.weights_dir / CODE_TOKENIZER_CONFIG

    @property
    def tokenizer_checkpoint(self) -> Path:
        return self.weights_dir / TOKENIZER_CHECKPOINT

    # ---- voices --------------------------------------------------------------------------------
    def check_voice(self, voice: str) -> None:
        if voice != DEFAULT_VOICE:
            raise UnknownVoice(
                f"engine '{self.info.name}' has no named voices, only '{DEFAULT_VOICE}'; "
                "clone a voice by giving prompt audio and its transcript instead"
            )

    # ---- lifecycle -----------------------------------------------------------------------------
    def _attention_candidates(self) -> list[str]:
        import torch

        capability = torch.cuda.get_device_capability(self.device) if self.device.startswith("cuda") else None
        return attention_chain(pick_attention(torch, capability))

    def _import_code(self) -> ModuleType:
        """MOSS-TTSD's generation_utils from the code folder (which must be on sys.path)."""
        ours = ("generation_utils", "modeling_asteroid", "XY_Tokenizer")
        for name in [n for n in sys.modules if n.split(".")[0] in ours]:
            if not from_folder(sys.modules[name], self.code_dir):
                del sys.modules[name]  # a same-named module from elsewhere: not MOSS-TTSD's
        return importlib.import_module("generation_utils")

    def _load(self) -> None:
        import torch

        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        failures = []
        with on_sys_path(self.code_dir):
            code = self._import_code()
            for attention in self._attention_candidates():
                try:
                    tokenizer, model, spt = code.load_model(
                        str(self.model_dir),
                        str(self.tokenizer_config),
                        str(self.tokenizer_checkpoint),
                        torch_dtype=dtype,
                        attn_implementation=attention,
                    )
                except (ImportError, ValueError) as error:  # this attention is not usable here
                    failures.append(f"{attention}: {error}")
                    continue
                break
            else:
                raise EngineUnavailable(f"{self.info.name}: the model did not load; " + "; ".join(failures))
        self._code, self._tokenizer, self.attention = code, tokenizer, attention
        self._model = model.to(self.device)
        self._spt = spt.to(self.device)

    def _unload(self) -> None:
        self._code = self._tokenizer = self._model = self._spt = None
        self.attention = None
        gc.collect()
        with contextlib.suppress(ImportError):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ---- speech --------------------------------------------------------------------------------
    def synthesize_dialogue(
        self,
        script_text: str,
        prompts: list[tuple[Path, str]] | None = None,
        options: SynthesisOptions | None = None,
    ) -> np.ndarray:
        """The whole script in one pass: float32 mono at 24 kHz.

        `script_text` is tagged [S1]/[S2] (see `parse_moss_turns`); `prompts[i]` is (audio file,
        transcript) for speaker i + 1. `options.extra`: `seed` (int), `normalize` (MOSS-TTSD's own
        text normalization, default True), `silence_duration` (seconds, for code versions that take it).
        `options.speed` is not supported by the model and is ignored.
        """
        options = options or SynthesisOptions()
        self._check_language(options.language)
        item = build_batch_item(parse_moss_turns(script_text), prompts)
        missing = [str(path) for path in prompt_paths(item) if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"prompt audio not found: {', '.join(missing)}")
        self.ensure_loaded()
        with self._run_lock:
            self.last_used = time.monotonic()
            return self._generate(item, options)

    def _check_language(self, language: str | None) -> None:
        if language is not None and language.split("-")[0] not in self.info.languages:
            raise ValueError(f"engine '{self.info.name}' speaks only {' and '.join(self.info.languages)}")

    def _generate(self, item: dict[str, str], options: SynthesisOptions) -> np.ndarray:
        """Run MOSS-TTSD's process_batch on one item; the caller holds the run lock."""
        import torch

        assert self._code is not None, "load the model first"
        process_batch = self._code.process_batch
        kwargs: dict[str, object] = {}
        if "silence_duration" in inspect.signature(process_batch).parameters:  # later code versions
            kwargs["silence_duration"] = float(cast(float, options.extra.get("silence_duration", 0.0)))
        seed = options.extra.get("seed")
        if seed is not None:
            torch.manual_seed(int(cast(int, seed)))
        with cuda_scope(self.device), torch.no_grad():
            _, results = process_batch(
                batch_items=[item],
                tokenizer=self._tokenizer,
                model=self._model,
                spt=self._spt,
                device=self.device,
                system_prompt=SYSTEM_PROMPT,
                start_idx=0,
                use_normalize=bool(options.extra.get("normalize", True)),
                **kwargs,
            )
        result = results[0] if results else None
        if result is None:
            raise RuntimeError(f"{self.info.name}: the model produced no speech tokens for this script")
        return to_mono_float32(result["audio_data"], int(result["sample_rate"]), self.info.sample_rate)
