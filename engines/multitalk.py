"""MultiTalk: audio-driven talking video of one or two people from a still image, on CUDA GPUs.

MultiTalk (MeiGen-AI, "Let Them Talk", code and weights Apache-2.0, on Wan2.1-I2V-14B, Apache-2.0)
adds audio cross-attention to Wan2.1's 14B image-to-video DiT: chinese-wav2vec2-base turns each
person's speech into embeddings, and the DiT (40 layers, 40 heads) paints the image's people
speaking them, 25 fps, 480p (or 720p) at the image's aspect ratio. Its code is not on PyPI and
pins its own stack (Python 3.10, torch 2.4.1 + CUDA 12.1, xformers, flash-attn, xfuser for
several GPUs), so the studio never imports it: each job runs the user's clone's own CLI,
`generate_multitalk.py`, with the clone's own Python environment, under `torchrun` (one rank per
leased GPU; FSDP for the DiT and T5 and Ulysses sequence parallelism across them), supervised by
`engines.launcher.TorchrunLauncher`: logs streamed, cancel and hang watchdog, no process left behind.

Expected layout (nothing is ever downloaded by the studio; the MultiTalk README's own steps):

    weights/
    ├── MultiTalk/
    │   ├── code/                           git clone https://github.com/MeiGen-AI/MultiTalk
    │   │   └── generate_multitalk.py
    │   └── env/bin/python                  its environment (or pass `python=` to the engine)
    ├── Wan2.1-I2V-14B-480P/                Wan-AI/Wan2.1-I2V-14B-480P, with MeiGen-MultiTalk's
    │   ├── multitalk.safetensors               multitalk.safetensors linked in and its
    │   └── diffusion_pytorch_model.safetensors.index.json   index replacing Wan's own
    ├── chinese-wav2vec2-base/              TencentGameMate/chinese-wav2vec2-base (+ model.safetensors
    │                                           from its refs/pr/1)
    └── MeiGen-MultiTalk/                   MeiGen-AI/MeiGen-MultiTalk

A request's input becomes MultiTalk's input JSON: `prompt`, `cond_image`, `cond_audio`
{person1, person2}, `audio_type` and, optionally, `bbox` per person. The studio's dialogue gives
one full-length track per person, silent while the other talks (its stems), so the tracks are already
in turn-taking order and play side by side: `audio_type` "para". ("add" is for two tracks holding
only each person's speech, which MultiTalk plays one after the other: one turn each.) MultiTalk's bbox is row-first:
its code fills `mask[x_min:x_max, y_min:y_max]` on an [height, width] mask, so its "x" is the row;
the studio takes boxes as (left, top, right, bottom) pixels and writes [top, left, bottom, right].

What is tested without its weights and a GPU: status naming every missing item, the input JSON,
the command lines for 1, 2, 4 and 8 GPUs and each preset, the validation errors
(tests/test_multitalk.py), and the contract with upstream's own code (tests/test_multitalk_contract.py:
its argument parser and `_validate_args` accept every command line built here, its parallel asserts
hold, its input-JSON reader and pipeline read the JSON written here). Upstream's model code needs
CUDA (flash-attention), so `generate()` running MultiTalk itself, the video, the memory estimates
below and its run time are unverified until it runs on a GPU machine with the files above.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from engines.base import (
    AudioChunk,
    Capability,
    Engine,
    EngineInfo,
    EngineState,
    EngineStatus,
    EngineUnavailable,
    Requirement,
    SynthesisOptions,
)
from engines.clone_code import ffmpeg_on_path
from engines.gpu import GpuAllocator, Lease
from engines.launcher import LaunchError, TorchrunLauncher, validate_parallel

CODE = "MultiTalk/code"
SCRIPT = f"{CODE}/generate_multitalk.py"
ENV_PYTHON = "MultiTalk/env/bin/python"
WAN = "Wan2.1-I2V-14B-480P"
WAV2VEC = "chinese-wav2vec2-base"
MULTITALK = "MeiGen-MultiTalk"
WAN_INDEX = f"{WAN}/diffusion_pytorch_model.safetensors.index.json"
CODE_REPO = "https://github.com/MeiGen-AI/MultiTalk"

NUM_HEADS = 40  # WAN_CONFIGS["multitalk-14B"].num_heads: Ulysses degrees must divide it
FPS = 25  # MultiTalk's wav2vec embeddings and videos are 25 frames per second
MAX_FRAMES = 1000  # streaming mode's max_frames_num: 40 s of video
MAX_CLIP_FRAMES = 201  # the README: clips up to 201 frames (trained on 81)
PRESETS = ("fast", "quality", "low-vram")
GPU_COUNTS = (1, 2, 4, 8)  # ranks the studio offers: each splits the 40 heads evenly (Ulysses)
RESOLUTIONS = {"480p": "multitalk-480", "720p": "multitalk-720"}
MODES = ("streaming", "clip")
DEFAULT_STEPS = {"fast": 20, "quality": 40, "low-vram": 40}
DEFAULT_WATCHDOG_S = 1800.0  # loading tens of GB of weights prints nothing for minutes

_CLONE = f"git clone {CODE_REPO} weights/{CODE}"
_ENV = (
    "MultiTalk's own environment, as its README sets it up: Python 3.10, torch 2.4.1 (cu121), xformers "
    "0.0.28, flash_attn 2.7.4.post1, misaki[en], its requirements.txt and librosa (and xfuser for several "
    f"GPUs), e.g. a venv at weights/{ENV_PYTHON.removesuffix('/bin/python')}"
)
_LINK = (
    f"link MeiGen-MultiTalk's multitalk.safetensors and diffusion_pytorch_model.safetensors.index.json "
    f"into weights/{WAN}/ (replacing Wan's index), as step 2 of MultiTalk's README says"
)


def _download(repo: str, folder: str, extra: str = "") -> str:
    return f"huggingface-cli download {repo}{extra} --local-dir weights/{folder}"


@dataclass(frozen=True)
class MultiTalkRequest:
    """One talking video: the composite image, one speech track per person and how to render it.

    `audio` holds one file per person (1 or 2). `audio_type` "para": the tracks are aligned and
    play together (the studio's per-person stems, each silent while the other talks: any number of
    turns); "add": each track holds only that person's speech and they play one after the other. `bboxes`, one (left, top, right, bottom) pixel box per person on `image`, tell
    MultiTalk who is who; without them two people are taken as the left and right halves.
    `steps` None takes the preset's (fast 20 with TeaCache, quality 40, low-vram 40 with the DiT
    offloaded to the CPU). `mode` "streaming" makes the video as long as the audio (up to 40 s),
    "clip" one chunk of `frame_num` frames (4n+1; MultiTalk was trained on 81).
    """

    prompt: str
    image: Path
    audio: list[Path]
    bboxes: list[tuple[int, int, int, int]] | None = None
    resolution: str = "480p"
    steps: int | None = None
    text_guidance: float = 5.0
    audio_guidance: float = 4.0
    seed: int = 42
    preset: str = "quality"
    mode: str = "streaming"
    frame_num: int = 81
    audio_type: str = "para"


def memory_estimate_mb(request: MultiTalkRequest, gpus: int) -> int:
    """Rough GPU memory per device (MB), to refuse GPUs that are clearly too small before a long load.

    Not measured here (no GPU): the 14B DiT is ~33 GB in bf16 and T5-XXL ~11 GB; MultiTalk's README
    runs 480p on one 24 GB RTX 4090 with the DiT offloaded (`low-vram`), and shards DiT and T5 over
    several GPUs with FSDP. 720p holds 2.25x the tokens of 480p.
    """
    scale = 1.5 if request.resolution == "720p" else 1.0
    if request.preset == "low-vram":
        return int(20_000 * scale)
    if gpus <= 1:
        return int(40_000 * scale)
    return int((12_000 + 44_000 / gpus) * scale)


class MultiTalkEngine(Engine):
    """MultiTalk on leased CUDA GPUs: a request becomes an mp4, made by the user's MultiTalk clone under torchrun."""

    info = EngineInfo(
        name="multitalk",
        display_name="MultiTalk (Wan2.1 14B)",
        capabilities=frozenset({Capability.VIDEO}),
        languages=("en", "zh"),
        license="Apache-2.0 (MultiTalk code and weights; Wan2.1-I2V-14B Apache-2.0)",
        sample_rate=16000,  # MultiTalk reads every audio track at 16 kHz
        description=(
            "MeiGen-AI's audio-driven talking video on Wan2.1-I2V-14B: one or two people in a still image "
            "speak their audio tracks in turn, 25 fps, 480p or 720p; needs CUDA GPUs (one with the "
            "low-VRAM preset, or several with FSDP and Ulysses sequence parallelism)."
        ),
        requirements=(
            Requirement(
                "gpu", "", "MultiTalk runs on CUDA GPUs: 480p fits one 24 GB card with the low-vram preset"
            ),
            Requirement("weights", SCRIPT, hint=_CLONE),
            Requirement("weights", ENV_PYTHON, hint=_ENV),
            Requirement("weights", f"{WAN}/config.json", hint=_download("Wan-AI/Wan2.1-I2V-14B-480P", WAN)),
            Requirement(
                "weights",
                f"{WAN}/models_t5_umt5-xxl-enc-bf16.pth",
                hint=_download("Wan-AI/Wan2.1-I2V-14B-480P", WAN),
            ),
            Requirement(
                "weights",
                f"{WAN}/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
                hint=_download("Wan-AI/Wan2.1-I2V-14B-480P", WAN),
            ),
            Requirement(
                "weights", f"{WAN}/Wan2.1_VAE.pth", hint=_download("Wan-AI/Wan2.1-I2V-14B-480P", WAN)
            ),
            # the T5 and CLIP tokenizers, folders of the same download (WAN_CONFIGS' t5/clip_tokenizer)
            Requirement(
                "weights", f"{WAN}/google/umt5-xxl", hint=_download("Wan-AI/Wan2.1-I2V-14B-480P", WAN)
            ),
            Requirement(
                "weights", f"{WAN}/xlm-roberta-large", hint=_download("Wan-AI/Wan2.1-I2V-14B-480P", WAN)
            ),
            Requirement(
                "weights",
                f"{MULTITALK}/multitalk.safetensors",
                hint=_download("MeiGen-AI/MeiGen-MultiTalk", MULTITALK),
            ),
            Requirement("weights", f"{WAN}/multitalk.safetensors", hint=_LINK),
            Requirement(
                "weights",
                f"{WAV2VEC}/config.json",
                hint=_download("TencentGameMate/chinese-wav2vec2-base", WAV2VEC),
            ),
            Requirement(
                "weights",
                f"{WAV2VEC}/model.safetensors",
                hint=_download(
                    "TencentGameMate/chinese-wav2vec2-base",
                    WAV2VEC,
                    " model.safetensors --revision refs/pr/1",
                ),
            ),
        ),
        memory_mb=0,  # nothing stays in this process: each job runs in MultiTalk's own processes
    )

    def __init__(
        self,
        weights_dir: Path,
        allocator: GpuAllocator,
        python: Path | None = None,
        watchdog_s: float = DEFAULT_WATCHDOG_S,
        grace_s: float = 30.0,
    ) -> None:
        super().__init__(weights_dir, allocator)
        self.watchdog_s = watchdog_s
        self.grace_s = grace_s
        if python is not None:  # another environment's interpreter, wherever it lives
            requirements = tuple(
                replace(req, target=str(Path(python).absolute())) if req.target == ENV_PYTHON else req
                for req in self.info.requirements
            )
            self.info = replace(self.info, requirements=requirements)
        # Absolute paths throughout: MultiTalk runs from its clone's folder, not the studio's.
        self.root = weights_dir.absolute()
        self.python = Path(python).absolute() if python is not None else self.root / ENV_PYTHON

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def code_dir(self) -> Path:
        return self.root / CODE

    def status(self) -> EngineStatus:
        """As the base, and the Wan folder must hold MultiTalk's index (it names multitalk.safetensors)."""
        status = super().status()
        index = self.weights_dir / WAN_INDEX
        try:
            wan_own_index = index.is_file() and "multitalk.safetensors" not in index.read_text(
                encoding="utf-8"
            )
        except OSError:
            wan_own_index = False
        if not wan_own_index:
            return status
        missing = (*status.missing, f"{index} is still Wan's own index: {_LINK}")
        return EngineStatus(status.state if status.missing else EngineState.NEEDS_WEIGHTS, missing)

    # ---- lifecycle: nothing is held in this process -------------------------------------------
    def _load(self) -> None:
        """Nothing to load here: every job starts MultiTalk's own processes (see `generate`)."""

    def _unload(self) -> None:
        """Nothing to drop: no model lives in this process."""

    def synthesize(
        self, text: str, voice: str, options: SynthesisOptions | None = None
    ) -> Iterator[AudioChunk]:
        raise EngineUnavailable(
            "multitalk makes talking video from speech, it does not speak: make the audio with a speech "
            "engine, then ask the video service for the video"
        )

    # ---- MultiTalk's inputs ---------------------------------------------------------------------
    def build_input_json(self, request: MultiTalkRequest, workdir: Path) -> Path:
        """Check the request and write MultiTalk's input JSON into `workdir`; ValueError says what to fix."""
        check_request(request)
        image = Path(request.image).absolute()
        audio = [Path(path).absolute() for path in request.audio]
        data: dict[str, object] = {"prompt": request.prompt.strip(), "cond_image": str(image)}
        people = [f"person{n}" for n in range(1, len(audio) + 1)]
        if len(audio) == 2:
            data["audio_type"] = request.audio_type
        data["cond_audio"] = dict(zip(people, map(str, audio), strict=True))
        if request.bboxes:
            # MultiTalk's boxes are row-first: [top, left, bottom, right].
            data["bbox"] = {
                person: [top, left, bottom, right]
                for person, (left, top, right, bottom) in zip(people, request.bboxes, strict=True)
            }
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir.absolute() / "multitalk_input.json"
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        return path

    def command(self, request: MultiTalkRequest, input_json: Path, out_stem: Path, gpus: int) -> list[str]:
        """`generate_multitalk.py` and its arguments for `gpus` ranks (torchrun puts its Python in front).

        Several GPUs shard the DiT and T5 with FSDP and split attention with Ulysses over all of them
        (40 heads: 1, 2, 4, 5, 8 or 10 GPUs); low-vram keeps the DiT on the CPU (one GPU only).
        """
        check_request(request)
        check_layout(request, gpus)
        steps = request.steps if request.steps is not None else DEFAULT_STEPS[request.preset]
        args = [
            str(self.root / SCRIPT),
            "--task", "multitalk-14B",
            "--size", RESOLUTIONS[request.resolution],
            "--ckpt_dir", str(self.root / WAN),
            "--wav2vec_dir", str(self.root / WAV2VEC),
            "--input_json", str(input_json.absolute()),
            "--mode", request.mode,
            "--frame_num", str(request.frame_num),
            "--sample_steps", str(steps),
            "--sample_text_guide_scale", f"{request.text_guidance:g}",
            "--sample_audio_guide_scale", f"{request.audio_guidance:g}",
            "--base_seed", str(request.seed),
            "--save_file", str(out_stem.absolute()),  # MultiTalk appends ".mp4"
            "--audio_save_dir", str(out_stem.absolute().parent / "_audio"),  # its wav2vec embeddings
        ]  # fmt: skip
        if request.preset == "fast":
            args.append("--use_teacache")  # skips DiT steps whose input barely changed: ~2-3x faster
        elif request.preset == "low-vram":
            args += ["--num_persistent_param_in_dit", "0", "--use_teacache"]
        if gpus > 1:
            args += ["--dit_fsdp", "--t5_fsdp", "--ulysses_size", str(gpus), "--ring_size", "1"]
        return args

    # ---- running ---------------------------------------------------------------------------------
    def generate(
        self,
        request: MultiTalkRequest,
        workdir: Path,
        lease: Lease,
        log: Callable[[str], None],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Path:
        """Make the video on the lease's GPUs (one rank each) and return the mp4's path.

        Raises EngineUnavailable (what is missing, or no GPU in the lease), ValueError (a request or
        layout that cannot run: checked before anything starts), and the launcher's LaunchError /
        LaunchHung / LaunchCancelled. The lease is the caller's to release.
        """
        status = self.status()
        if status.missing:
            raise EngineUnavailable(f"{self.info.name}: " + "; ".join(status.missing))
        gpus = len(lease.gpus)
        if gpus == 0:
            raise EngineUnavailable("multitalk needs CUDA GPUs and the lease holds none (it ran on the CPU)")
        check_request(request)
        validate_parallel(
            world_size=gpus,
            lease=lease,
            allocator=self.allocator,
            num_heads=NUM_HEADS,
            ulysses=gpus,
            memory_mb=memory_estimate_mb(request, gpus),
        )
        workdir.mkdir(parents=True, exist_ok=True)
        input_json = self.build_input_json(request, workdir)
        out_stem = workdir.absolute() / "multitalk"
        target = self.command(request, input_json, out_stem, gpus)
        log(
            f"[multitalk] {gpus} GPU(s) {', '.join(map(str, lease.gpus))}, preset {request.preset}: {' '.join(target)}"
        )
        launcher = TorchrunLauncher(self.python, watchdog_s=self.watchdog_s, grace_s=self.grace_s)
        launcher.run(
            lease,
            gpus,
            target,
            output_dir=workdir,
            log=log,
            cancelled=cancelled,
            cwd=self.code_dir,  # its modules (wan, src) import from the clone's root
            env=self._environment(workdir),
        )
        video = out_stem.with_suffix(".mp4")
        if not video.is_file():
            raise LaunchError(f"MultiTalk ended without writing {video}")
        return video

    def _environment(self, workdir: Path) -> dict[str, str]:
        """PYTHONPATH to the clone, and an `ffmpeg` on PATH: MultiTalk calls it by name to mux the audio."""
        env = {"PYTHONPATH": str(self.code_dir), "TOKENIZERS_PARALLELISM": "false"}
        return env | ffmpeg_on_path(workdir / "_bin")


def gpus_for(preset: str, free: int) -> int:
    """How many GPUs "auto" takes: one for low-vram (the DiT stays on the CPU); otherwise the most
    of 8, 4, 2 and 1 that are free (at least one: the job then waits for it)."""
    if preset == "low-vram":
        return 1
    return max((n for n in GPU_COUNTS if n <= free), default=1)


_TQDM = re.compile(r"(\d+)/(\d+) \[")  # tqdm's "12/40 [00:31<..." over the denoising steps


class DenoisingProgress:
    """MultiTalk's denoising progress, read from its log: tqdm counts each clip's steps (streaming
    mode makes one clip after another), so a count that starts again is the next clip."""

    def __init__(self, clips: int) -> None:
        self.clips = max(1, clips)
        self.clip = 1
        self._last = 0

    def read(self, line: str) -> tuple[float, str] | None:
        """(fraction of the whole job done, what it is doing) for a tqdm line; None for other lines."""
        match = _TQDM.search(line)
        if match is None:
            return None
        done, total = int(match.group(1)), int(match.group(2))
        if total < 1:
            return None
        if done < self._last:
            self.clip += 1
        self._last = done
        clip = min(self.clip, self.clips)
        fraction = min(1.0, ((clip - 1) + done / total) / self.clips)
        return fraction, f"MultiTalk clip {clip}/{self.clips}, step {done}/{total}"


def clip_count(seconds: float, request: MultiTalkRequest) -> int:
    """How many clips MultiTalk makes: one in clip mode; in streaming mode, 81 frames and then 56 more
    per clip (each new clip starts from the last 25 frames of the one before), up to 1000 frames."""
    if request.mode == "clip":
        return 1
    frames = min(MAX_FRAMES, math.ceil(seconds * FPS))
    clip, motion = 81, 25
    return 1 + max(0, math.ceil((frames - clip) / (clip - motion)))


# ---- checks ------------------------------------------------------------------------------------------
def check_layout(request: MultiTalkRequest, gpus: int) -> None:
    """ValueError unless `gpus` ranks can run the request: heads split evenly, low-vram on one GPU."""
    if gpus < 1:
        raise ValueError(f"MultiTalk needs at least one GPU; got {gpus}")
    if request.preset == "low-vram" and gpus > 1:
        raise ValueError(
            "the low-vram preset runs on one GPU (it keeps the DiT on the CPU); use 'fast' or 'quality' "
            f"to spread the model over {gpus} GPUs"
        )
    if NUM_HEADS % gpus:
        usable = [n for n in range(1, 11) if NUM_HEADS % n == 0]
        raise ValueError(
            f"MultiTalk's DiT has {NUM_HEADS} attention heads, which do not split across {gpus} GPUs "
            f"(Ulysses gives each GPU whole heads): use {', '.join(map(str, usable))} GPUs"
        )


def check_request(request: MultiTalkRequest) -> None:
    """ValueError, saying what to fix, unless MultiTalk can take the request as it is."""
    if not request.prompt.strip():
        raise ValueError("the prompt is empty: describe the scene and the people in it")
    if request.preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {request.preset!r}")
    if request.resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}; got {request.resolution!r}")
    if request.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {request.mode!r}")
    if request.steps is not None and not 1 <= request.steps <= 100:
        raise ValueError(
            f"steps must be from 1 to 100 (MultiTalk uses 40; 10 keeps lip sync); got {request.steps}"
        )
    for name, value in (("text_guidance", request.text_guidance), ("audio_guidance", request.audio_guidance)):
        if not math.isfinite(value) or not 0 < value <= 20:
            raise ValueError(
                f"{name} must be above 0 and at most 20 (MultiTalk: text 5, audio 3-5); got {value}"
            )
    if request.seed < 0:
        raise ValueError(f"seed must not be negative; got {request.seed}")
    if request.frame_num % 4 != 1 or not 5 <= request.frame_num <= MAX_CLIP_FRAMES:
        raise ValueError(
            f"frame_num must be 4n+1 from 5 to {MAX_CLIP_FRAMES} (MultiTalk uses 81); got {request.frame_num}"
        )
    if not 1 <= len(request.audio) <= 2:
        raise ValueError(
            f"MultiTalk takes one audio track per person, for 1 or 2 people; got {len(request.audio)}"
        )
    width, height = _image_size(Path(request.image))
    if request.bboxes is not None:
        _check_boxes(request.bboxes, len(request.audio), width, height)
    if request.audio_type not in ("para", "add"):
        raise ValueError(f"audio_type must be 'para' or 'add'; got {request.audio_type!r}")
    lengths = [_audio_seconds(Path(path)) for path in request.audio]
    seconds = sum(lengths) if request.audio_type == "add" else max(lengths)  # "add" plays them in turn
    if seconds * FPS <= request.frame_num:
        raise ValueError(
            f"the audio lasts {seconds:.2f} s; MultiTalk needs more than {request.frame_num} frames of it "
            f"({request.frame_num / FPS:.2f} s at {FPS} fps): give longer audio or a smaller frame_num"
        )
    if request.mode == "streaming" and seconds * FPS > MAX_FRAMES:
        raise ValueError(
            f"the audio lasts {seconds:.1f} s; MultiTalk's streaming mode stops at {MAX_FRAMES} frames "
            f"({MAX_FRAMES / FPS:.0f} s): split it into shorter videos"
        )


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise ValueError(f"the image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"the image {path} cannot be read as a picture: {error}") from None


def _audio_seconds(path: Path) -> float:
    import soundfile

    if not path.is_file():
        raise ValueError(f"the audio file {path} does not exist")
    try:
        info = soundfile.info(str(path))
    except RuntimeError as error:
        raise ValueError(f"the audio file {path} cannot be read (give WAV or FLAC): {error}") from None
    return float(info.duration)


def _check_boxes(boxes: list[tuple[int, int, int, int]], people: int, width: int, height: int) -> None:
    if people != 2:
        raise ValueError(
            "boxes tell two people apart; with one person MultiTalk uses the whole image: drop them"
        )
    if len(boxes) != people:
        raise ValueError(f"give one box per person: {people} audio tracks, {len(boxes)} boxes")
    for number, box in enumerate(boxes, start=1):
        left, top, right, bottom = box
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise ValueError(
                f"box {number} {list(box)} is not (left, top, right, bottom) inside the {width}x{height} image"
            )
