"""MOSS-TTSD: a whole multi-speaker script spoken in one pass, each voice cloned from a reference clip.

MOSS-TTSD (OpenMOSS, Apache-2.0) writes the audio of a whole `[S1]...[S2]...` script at once, so
turn-taking and prosody come from the model, not from stitched sentences. Two releases are driven
through their upstream code, in a worker (`engines/worker.py`) on the engine's own pinned
environment (`engines/envs/`), chosen by the weights the user placed:

- **v1.0** (default; February 2026): `MossTTSDelay` (a Qwen3 backbone writing 16 channels of
  MOSS-Audio-Tokenizer codes, 12.5 frames a second at 24 kHz), 1-5 speakers, 20 languages, on a GPU
  or (slowly) the CPU. Loaded as its model card does (`AutoProcessor` with `codec_path`, then
  `AutoModel`, remote code from the model folder, sdpa attention unless flash-attn is installed)
  and run in upstream's recommended `voice_clone_and_continuation` mode: each speaker's reference
  clip encoded as its reference, the clips' transcripts as the script's prefix and their audio as
  the start of the assistant's audio, which the model continues. The model card's sampling
  (audio temperature 1.1, top-p 0.9, top-k 50, repetition penalty 1.1; the model folder's
  generation_config.json wins). Long scripts go in chunks of whole turns (`CHUNK_CHARS`), each
  continuing from the same references, so every chunk stays well inside the model's token budget.
- **v0.5** (the seed's): `AsteroidTTSInstruct` + XY-Tokenizer from the user's clone of the
  MOSS-TTSD repository at v0.5, `generation_utils.load_model` / `process_batch` as its `inference.py`
  calls them, 2 speakers. Upstream hard-codes flash-attention 2 and bf16, and its sampling loop
  crashes under sdpa and eager attention (it builds `cache_position` from the untrimmed prompt), so
  it runs with flash-attention 2 on a CUDA GPU or not at all: asking for another attention
  (`STUDIO_MOSS_ATTENTION`) or lacking flash-attn gives that message instead of a crash.

Layout (nothing is ever downloaded by the studio; `weights/README.md` says where to get each):

    weights/MOSS-TTSD/
    ├── MOSS-TTSD-v1.0/         the OpenMOSS-Team/MOSS-TTSD-v1.0 model folder (config.json, remote code, weights, tokenizer)
    ├── MOSS-Audio-Tokenizer/   the OpenMOSS-Team/MOSS-Audio-Tokenizer codec folder
    │   (v0.5 instead:)
    ├── code/                   git clone of github.com/OpenMOSS/MOSS-TTSD at its v0.5 release
    ├── MOSS-TTSD-v0.5/         the fnlp/MOSS-TTSD-v0.5 model folder
    └── XY_Tokenizer/xy_tokenizer.ckpt

Tested on tiny random-weight models built with upstream's own classes in this layout: v1.0 end to end
(tests/test_moss_ttsd_v1.py: a 3-speaker dialogue through the REST API and the Dialogue tab, the model
in its worker); v0.5 as far as its code goes on a CPU (tests/test_moss_ttsd_v05.py: the XY tokenizer
round trip, upstream's load_model stopping at flash-attention 2, the sampling loop's sdpa crash);
status, input builders and messages in tests/test_moss_ttsd.py.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engines.base import (
    Capability,
    EngineInfo,
    EngineUnavailable,
    Requirement,
    SynthesisOptions,
    UnknownVoice,
)
from engines.clone_code import cuda_scope, from_folder, on_sys_path
from engines.gpu import GpuAllocator
from engines.worker import HEAVY_IDLE_EXIT_S, WorkerEngine

FOLDER = "MOSS-TTSD"
V1_MODEL = f"{FOLDER}/MOSS-TTSD-v1.0"
V1_CODEC = f"{FOLDER}/MOSS-Audio-Tokenizer"
CODE = f"{FOLDER}/code"
MODEL = f"{FOLDER}/MOSS-TTSD-v0.5"
TOKENIZER = f"{FOLDER}/XY_Tokenizer"
CODE_TOKENIZER_CONFIG = f"{CODE}/XY_Tokenizer/config/xy_tokenizer_config.yaml"
TOKENIZER_CONFIG_NAME = "xy_tokenizer_config.yaml"
TOKENIZER_CHECKPOINT = f"{TOKENIZER}/xy_tokenizer.ckpt"
CODE_REPO = "https://github.com/OpenMOSS/MOSS-TTSD"

V1, V05 = "1.0", "0.5"
MAX_SPEAKERS = {V1: 5, V05: 2}
LANGUAGES_V1 = (
    "zh", "en", "ja", "de", "es", "fr", "it", "he", "ko", "ru",
    "fa", "ar", "pl", "pt", "cs", "da", "sv", "hu", "el", "tr",
)  # fmt: skip
LANGUAGES_V05 = ("zh", "en")
# The model card's sampling; generation_config.json in the model folder wins.
SAMPLING = {"temperature": 1.1, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1, "max_new_tokens": 8192}
# Whole turns per generation: ~1500 characters is 2-5 minutes of speech, far inside 8192 tokens
# (~11 minutes at 12.5 frames a second).
CHUNK_CHARS = 1500
ATTENTION_ENV = (
    "STUDIO_MOSS_ATTENTION"  # v0.5 only: the attention asked for (it runs with flash_attention_2 only)
)
V05_ATTENTION = "flash_attention_2"
# The style prompt MOSS-TTSD v0.5's inference.py gives every script.
SYSTEM_PROMPT = (
    "You are a speech synthesizer that generates natural, realistic, and human-like conversational audio "
    "from dialogue text."
)
DEFAULT_VOICE = "default"  # no prompt audio: the model picks the voices

_CLONE = f"git clone {CODE_REPO} weights/{CODE}, at its v0.5 release"
_V1_REQUIREMENTS = (
    Requirement("package", "torch"),
    Requirement("package", "torchaudio"),
    Requirement("package", "transformers"),
    Requirement(
        "weights",
        f"{V1_MODEL}/config.json",
        hint=f"hf download OpenMOSS-Team/MOSS-TTSD-v1.0 --local-dir weights/{V1_MODEL}",
    ),
    Requirement(
        "weights",
        f"{V1_CODEC}/config.json",
        hint=f"hf download OpenMOSS-Team/MOSS-Audio-Tokenizer --local-dir weights/{V1_CODEC}",
    ),
)
_V05_REQUIREMENTS = (
    Requirement("gpu", "", "MOSS-TTSD v0.5 runs with flash-attention 2 in bf16 on a CUDA GPU only"),
    Requirement("package", "torch"),
    Requirement("package", "transformers"),
    Requirement("package", "yaml"),
    Requirement("package", "einops"),
    Requirement("package", "liger_kernel"),
    Requirement("weights", f"{CODE}/generation_utils.py", hint=_CLONE),
    Requirement("weights", CODE_TOKENIZER_CONFIG, hint=f"comes with the MOSS-TTSD v0.5 code: {_CLONE}"),
    Requirement(
        "weights",
        f"{MODEL}/config.json",
        hint=f"hf download fnlp/MOSS-TTSD-v0.5 --local-dir weights/{MODEL} "
        "(also published as OpenMOSS-Team/MOSS-TTSD-v0.5)",
    ),
    Requirement(
        "weights",
        TOKENIZER_CHECKPOINT,
        hint=f"hf download fnlp/XY_Tokenizer_TTSD_V0 xy_tokenizer.ckpt --local-dir weights/{TOKENIZER}",
    ),
)
# [S1], [1] (one digit, as MOSS-TTSD's own normalizer reads it) and `S1:` at the start of a line.
_TAG = re.compile(r"\[\s*[Ss]\s*(\d+)\s*\]|\[(\d)\]|^[ \t]*[Ss](\d+)[ \t]*[:：]", re.MULTILINE)

Turns = list[tuple[int, str]]


# ---- pure helpers: MOSS-TTSD's input format, testable without its code ------------------------------
def parse_moss_turns(script_text: str, max_speakers: int = MAX_SPEAKERS[V1]) -> Turns:
    """Speaker-numbered turns of a script tagged `[S1]`..`[S5]` (also `[1]`, or `S1:` at a line start).

    Text before the first tag, or a script with no tag at all, is speaker 1. Turns of the same
    speaker in a row merge; empty turns drop. ValueError for speakers past `max_speakers`.
    """
    turns: Turns = []

    def add(speaker: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        if not 1 <= speaker <= max_speakers:
            tags = " to ".join(dict.fromkeys(("[S1]", f"[S{max_speakers}]")))
            raise ValueError(
                f"MOSS-TTSD here voices {max_speakers} speakers, {tags}; the script has [S{speaker}]"
            )
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
    """`[S1]text[S2]text...`: the script form MOSS-TTSD reads."""
    return "".join(f"[S{speaker}]{text}" for speaker, text in turns)


def script_chunks(turns: Turns, max_chars: int = CHUNK_CHARS) -> list[Turns]:
    """The turns in runs of at most `max_chars` characters, cut between turns (a longer turn alone)."""
    chunks: list[Turns] = []
    size = 0
    for turn in turns:
        if chunks and size + len(turn[1]) <= max_chars:
            chunks[-1].append(turn)
            size += len(turn[1])
        else:
            chunks.append([turn])
            size = len(turn[1])
    return chunks


def prefixed_script(chunk: Turns, prompt_texts: Sequence[str]) -> str:
    """The text v1.0 continues: each speaker's reference transcript, in speaker order, then the chunk
    (upstream's `_build_prefixed_text`: the prefix is what the prompt audio says)."""
    prefix = [(index, " ".join(text.split())) for index, text in enumerate(prompt_texts, start=1)]
    merged: Turns = []
    for speaker, text in [*prefix, *chunk]:
        if merged and merged[-1][0] == speaker:  # a speaker's prefix runs on into its first turn
            merged[-1] = (speaker, f"{merged[-1][1]} {text}")
        else:
            merged.append((speaker, text))
    return format_moss_text(merged)


def build_batch_item(
    turns: Sequence[tuple[int, str]], prompts: Sequence[tuple[Path | str, str]] | None = None
) -> dict[str, str]:
    """One item for MOSS-TTSD v0.5's `process_batch`, as a line of its JSONL input.

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
    most = MAX_SPEAKERS[V05]
    if len(prompts) > most:
        raise ValueError(f"MOSS-TTSD v0.5 takes one prompt per speaker, at most {most}; got {len(prompts)}")
    cleaned = []
    for index, (audio, transcript) in enumerate(prompts, start=1):
        transcript = " ".join(str(transcript).split())
        if not transcript:
            raise ValueError(f"prompt audio for speaker {index} needs its transcript")
        cleaned.append((str(Path(audio).absolute()), transcript))
    if len(cleaned) == most:
        for index, (audio, transcript) in enumerate(cleaned, start=1):
            item[f"prompt_audio_speaker{index}"] = audio
            item[f"prompt_text_speaker{index}"] = transcript
        return item
    audio, transcript = cleaned[0]
    tagged = parse_moss_turns(transcript, most) if _TAG.search(transcript) else None
    if tagged is None and any(speaker != 1 for speaker, _ in turns):
        raise ValueError(
            "one prompt clones one voice, but the script has two speakers: give a prompt per speaker, "
            "or one clip of both whose transcript is tagged [S1]/[S2]"
        )
    item["prompt_audio"] = audio
    item["prompt_text"] = format_moss_text(tagged) if tagged else f"[S1]{transcript}"
    return item


def prompt_paths(item: dict[str, str]) -> list[Path]:
    """The prompt audio files a v0.5 batch item refers to."""
    keys = ("prompt_audio", "prompt_audio_speaker1", "prompt_audio_speaker2")
    return [Path(item[key]) for key in keys if item.get(key)]


def _with_prompt_audio(item: dict[str, str]) -> dict[str, Any]:
    """A v0.5 batch item as process_batch can use it: prompt clips read into (wav [channels, T], rate)
    tuples, which it takes as torchaudio.load's result (its torchaudio 2.9 loads files only through
    torchcodec, which its environment lacks), and `prompt_audio: None` when there is no prompt (it
    would try to load "" otherwise)."""
    import soundfile as sf
    import torch

    loaded: dict[str, Any] = dict(item)
    paths = prompt_paths(item)
    for key in ("prompt_audio", "prompt_audio_speaker1", "prompt_audio_speaker2"):
        if item.get(key):
            audio, rate = sf.read(item[key], dtype="float32", always_2d=True)
            loaded[key] = (torch.from_numpy(audio.T.copy()), int(rate))
    if not paths:
        loaded |= {"prompt_audio": None, "prompt_text": ""}
    return loaded


def v05_attention(requested: str | None, flash_importable: bool, on_cuda: bool) -> str:
    """The attention v0.5 loads with: flash_attention_2, or EngineUnavailable saying why nothing else works."""
    why = (
        "MOSS-TTSD v0.5 runs only with flash_attention_2 on a CUDA GPU: upstream hard-codes it, and its "
        "sampling loop crashes under sdpa and eager attention (it builds cache_position from the "
        "untrimmed prompt), on a GPU as on the CPU"
    )
    if requested and requested != V05_ATTENTION:
        raise EngineUnavailable(
            f"{why}; {ATTENTION_ENV}={requested} cannot work. Place MOSS-TTSD v1.0 for sdpa or the CPU"
        )
    if not on_cuda:
        raise EngineUnavailable(f"{why}; this worker has no CUDA GPU. Place MOSS-TTSD v1.0 to run on the CPU")
    if not flash_importable:
        raise EngineUnavailable(
            f"{why}; flash-attn does not import in its environment (pip install flash-attn "
            "--no-build-isolation there)"
        )
    return V05_ATTENTION


def to_mono_float32(audio: Any, rate: int, target_rate: int) -> np.ndarray:
    """Audio ([1, T] or [T] tensor or array) as float32 mono in [-1, 1] at `target_rate`."""
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


class MossTtsdEngine(WorkerEngine):
    """MOSS-TTSD v1.0 (or v0.5, by the weights placed) in its worker: a whole [S1]..[S5] script in
    one pass, voices cloned from reference clips and their transcripts."""

    info = EngineInfo(
        name="moss-ttsd",
        display_name="MOSS-TTSD",
        capabilities=frozenset({Capability.DIALOGUE}),
        languages=LANGUAGES_V1,
        license="Apache-2.0",
        sample_rate=24000,  # both versions' codecs decode at 24 kHz
        description=(
            "OpenMOSS's spoken-dialogue model: a whole script of 1-5 speakers (v1.0; 2 with v0.5) in one "
            "pass, each voice cloned from a reference clip; GPU recommended, v1.0 also runs on the CPU."
        ),
        requirements=_V1_REQUIREMENTS,
        # MOSS-TTSD's deployment notes: 5.9 GB + 1.7 MB per second of audio for v0.5 (7.5 GB at 960 s).
        memory_mb=12000,
        environment="moss-ttsd",
    )

    worker_idle_exit_s = HEAVY_IDLE_EXIT_S

    def __init__(self, weights_dir: Path, allocator: GpuAllocator, *, in_process: bool = False) -> None:
        super().__init__(weights_dir, allocator, in_process=in_process)
        self._processor: Any = None  # v1.0
        self._model: Any = None
        self._code: ModuleType | None = None  # v0.5
        self._tokenizer: Any = None
        self._spt: Any = None
        self.attention: str | None = None  # the implementation the model loaded with

    # ---- which version ---------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """v1.0 when its model folder is placed, else v0.5 when its model is, else v1.0 (what to place)."""
        if (self.weights_dir / V1_MODEL / "config.json").exists():
            return V1
        return V05 if (self.weights_dir / MODEL / "config.json").exists() else V1

    @property
    def max_speakers(self) -> int:
        return MAX_SPEAKERS[self.version]

    def requirements(self) -> tuple[Requirement, ...]:
        return _V1_REQUIREMENTS if self.version == V1 else _V05_REQUIREMENTS

    def environment_name(self) -> str:
        return "moss-ttsd" if self.version == V1 else "moss-ttsd-v0.5"

    # ---- paths -------------------------------------------------------------------------------
    @property
    def code_dir(self) -> Path:
        return self.weights_dir / CODE

    @property
    def tokenizer_config(self) -> Path:
        """v0.5's XY tokenizer yaml: a copy next to the checkpoint wins over the code's own."""
        own = self.weights_dir / TOKENIZER / TOKENIZER_CONFIG_NAME
        return own if own.exists() else self.weights_dir / CODE_TOKENIZER_CONFIG

    # ---- voices --------------------------------------------------------------------------------
    def check_voice(self, voice: str) -> None:
        if voice != DEFAULT_VOICE:
            raise UnknownVoice(
                f"engine '{self.info.name}' has no named voices, only '{DEFAULT_VOICE}'; "
                "clone voices by giving reference clips and their transcripts instead"
            )

    # ---- speech --------------------------------------------------------------------------------
    def synthesize_dialogue(
        self,
        script_text: str,
        prompts: list[tuple[Path, str]] | None = None,
        options: SynthesisOptions | None = None,
    ) -> np.ndarray:
        """The whole script: float32 mono at 24 kHz.

        `script_text` is tagged [S1]..[Sn] (see `parse_moss_turns`); `prompts[i]` is (reference clip,
        its transcript) for speaker i + 1. `options.extra`: `seed` (int), `max_new_tokens` (per
        chunk); for v0.5 also `normalize` and `silence_duration`. The model has no speed control:
        `options.speed` is ignored.
        """
        options = options or SynthesisOptions()
        language = options.language
        languages = LANGUAGES_V1 if self.version == V1 else LANGUAGES_V05
        if language is not None and language.split("-")[0] not in languages:
            raise ValueError(f"MOSS-TTSD v{self.version} speaks {', '.join(languages)}; not {language}")
        turns = parse_moss_turns(script_text, self.max_speakers)
        if not turns:
            raise ValueError("the script has no text to speak")
        prompts = [(Path(audio), str(text)) for audio, text in prompts or []]
        missing = [str(audio) for audio, _ in prompts if not audio.is_file()]
        if missing:
            raise FileNotFoundError(f"reference audio not found: {', '.join(missing)}")
        if not self.in_process:
            seed = options.extra.get("seed")
            return self.remote(
                "synthesize_dialogue", script_text, prompts, options, seed=None if seed is None else int(seed)
            )
        self.ensure_loaded()
        with self._runs:
            self.last_used = time.monotonic()
            if self.version == V1:
                return self._generate_v1(turns, prompts, options)
            return self._generate_v05(build_batch_item(turns, prompts), options)

    # ---- the model: in the worker only -------------------------------------------------------------
    def _load_model(self) -> None:
        if self.version == V1:
            self._load_v1()
        else:
            self._load_v05()

    def _unload_model(self) -> None:
        self._processor = self._model = self._code = self._tokenizer = self._spt = None
        self.attention = None

    def _load_v1(self) -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        model_dir, codec_dir = self.weights_dir / V1_MODEL, self.weights_dir / V1_CODEC
        on_gpu = self.device.startswith("cuda")
        # The processor first, as upstream's inference.py does: it brings the remote code's helper modules.
        processor = AutoProcessor.from_pretrained(
            str(model_dir), trust_remote_code=True, codec_path=str(codec_dir)
        )
        processor.audio_tokenizer = processor.audio_tokenizer.to(self.device).eval()
        attention = "sdpa"
        if on_gpu and importlib.util.find_spec("flash_attn") is not None:
            attention = "flash_attention_2"
        model = AutoModel.from_pretrained(
            str(model_dir),
            trust_remote_code=True,
            attn_implementation=attention,
            torch_dtype=torch.bfloat16 if on_gpu else torch.float32,
        )
        self._processor, self._model, self.attention = processor, model.to(self.device).eval(), attention

    def _sampling(self, options: SynthesisOptions) -> dict[str, Any]:
        """The model card's sampling, under the model folder's generation_config.json, under options.extra."""
        settings: dict[str, Any] = dict(SAMPLING)
        config = self.weights_dir / V1_MODEL / "generation_config.json"
        if config.is_file():
            with contextlib.suppress(ValueError, OSError):
                stored = json.loads(config.read_text(encoding="utf-8"))
                settings.update({key: stored[key] for key in SAMPLING if key in stored})
        if "max_new_tokens" in options.extra:
            settings["max_new_tokens"] = int(options.extra["max_new_tokens"])  # type: ignore[call-overload]
        return settings

    def _reference_wavs(self, prompts: list[tuple[Path, str]], rate: int) -> list[Any]:
        """Each reference clip as a mono [1, T] tensor at `rate`, first brought to the lowest rate among
        them (upstream's sample-rate normalisation, recommended for two or more speakers)."""
        import soundfile as sf
        import torch
        import torchaudio

        loaded = []
        for audio_path, _ in prompts:
            audio, sr = sf.read(str(audio_path), dtype="float32", always_2d=True)
            loaded.append((torch.from_numpy(audio).transpose(0, 1).mean(dim=0, keepdim=True), int(sr)))
        lowest = min((sr for _, sr in loaded), default=rate)
        wavs = []
        for wav, sr in loaded:
            for new in (lowest, rate):
                if sr != new:
                    wav, sr = torchaudio.functional.resample(wav, sr, new), new
            wavs.append(wav.contiguous())
        return wavs

    def _generate_v1(
        self, turns: Turns, prompts: list[tuple[Path, str]], options: SynthesisOptions
    ) -> np.ndarray:
        import torch

        processor, model = self._processor, self._model
        assert processor is not None and model is not None, "load the model first"
        rate = int(processor.model_config.sampling_rate)
        sampling = self._sampling(options)
        wavs = self._reference_wavs(prompts, rate)
        with torch.no_grad():
            reference = processor.encode_audios_from_wav(wavs, sampling_rate=rate) if wavs else None
            prompt_audio = (
                processor.encode_audios_from_wav([torch.cat(wavs, dim=-1)], sampling_rate=rate)[0]
                if wavs
                else None
            )
            pieces = []
            for chunk in script_chunks(turns):
                if reference is not None:  # voice_clone_and_continuation
                    text = prefixed_script(chunk, [text for _, text in prompts])
                    conversation = [
                        processor.build_user_message(text=text, reference=reference),
                        processor.build_assistant_message(audio_codes_list=[prompt_audio]),
                    ]
                    mode = "continuation"
                else:  # no references: the model picks the voices
                    conversation = [processor.build_user_message(text=format_moss_text(chunk))]
                    mode = "generation"
                batch = processor([conversation], mode=mode)
                outputs = model.generate(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    max_new_tokens=sampling["max_new_tokens"],
                    audio_temperature=sampling["temperature"],
                    audio_top_p=sampling["top_p"],
                    audio_top_k=sampling["top_k"],
                    audio_repetition_penalty=sampling["repetition_penalty"],
                )
                message = processor.decode(outputs)[0]
                segments = [a for a in (message.audio_codes_list if message else []) if hasattr(a, "detach")]
                if not segments:
                    raise RuntimeError(
                        f"{self.info.name}: the model produced no audio for: {format_moss_text(chunk)[:80]}"
                    )
                pieces.extend(segment.detach().float().cpu().reshape(-1).numpy() for segment in segments)
        return to_mono_float32(np.concatenate(pieces), rate, self.info.sample_rate)

    # ---- v0.5 -----------------------------------------------------------------------------------
    def _import_v05_code(self) -> ModuleType:
        """MOSS-TTSD v0.5's generation_utils from the code folder (which must be on sys.path)."""
        ours = ("generation_utils", "modeling_asteroid", "XY_Tokenizer")
        for name in [n for n in sys.modules if n.split(".")[0] in ours]:
            if not from_folder(sys.modules[name], self.code_dir):
                del sys.modules[name]  # a same-named module from elsewhere: not MOSS-TTSD's
        return importlib.import_module("generation_utils")

    def _load_v05(self) -> None:
        import torch

        attention = v05_attention(
            os.environ.get(ATTENTION_ENV),
            importlib.util.find_spec("flash_attn") is not None,
            self.device.startswith("cuda"),
        )
        with on_sys_path(self.code_dir):
            code = self._import_v05_code()
            # v0.5's own load_model takes the three paths and hard-codes bf16 + flash_attention_2;
            # later code versions take them as arguments.
            accepted = inspect.signature(code.load_model).parameters
            options = {"torch_dtype": torch.bfloat16, "attn_implementation": attention}
            tokenizer, model, spt = code.load_model(
                str(self.weights_dir / MODEL),
                str(self.tokenizer_config),
                str(self.weights_dir / TOKENIZER_CHECKPOINT),
                **{key: value for key, value in options.items() if key in accepted},
            )
        self._code, self._tokenizer, self.attention = code, tokenizer, attention
        self._model = model.to(self.device)
        self._spt = spt.to(self.device)

    def _generate_v05(self, item: dict[str, str], options: SynthesisOptions) -> np.ndarray:
        """MOSS-TTSD v0.5's process_batch on one item; the caller holds the run lock."""
        import torch

        assert self._code is not None, "load the model first"
        process_batch = self._code.process_batch
        kwargs: dict[str, object] = {}
        if "silence_duration" in inspect.signature(process_batch).parameters:  # later code versions
            kwargs["silence_duration"] = float(options.extra.get("silence_duration", 0.0))  # type: ignore[arg-type]
        with cuda_scope(self.device), torch.no_grad():
            _, results = process_batch(
                batch_items=[_with_prompt_audio(item)],
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
