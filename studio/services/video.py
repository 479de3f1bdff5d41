"""Two-person talking video: portraits + a dialogue script -> video.mp4, dialogue.wav and dialogue.srt.

The script goes through the dialogue service (its parser, voices, per-turn synthesis, mix, subtitles
and per-speaker stems); each person's stem is their own audio track in turn-taking order: the whole
dialogue's length, their speech at their turns and silence while the other speaks, so the two
tracks are aligned and add up to dialogue.wav. The left portrait
speaks S1 and the right one S2. The video is made by the embedded CPU renderer (talking_head.py),
or by MultiTalk when that engine is set up; asked for MultiTalk where it is not, the studio says what
is missing and renders with the embedded renderer. Everything a request can get wrong (images,
faces, script, options) is found before the task starts.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile as sf
from pydantic import Field

from engines.base import EngineUnavailable, VideoMaker
from engines.gpu import AllocationError, Lease
from engines.registry import EngineRegistry
from studio.errors import BadInput, Unavailable
from studio.services.dialogue import DEFAULT_PAUSE_MS, MIX_RATE, DialogueConfig, DialogueService, PlannedTurn
from studio.services.portrait import (
    Box,
    FaceLayout,
    Portrait,
    draw_layout,
    load_portrait,
    locate_face,
    locate_two_faces,
)
from studio.services.talking_head import (
    RESOLUTIONS,
    Composite,
    RenderOptions,
    Track,
    compose_pair,
    compose_single,
    render,
)
from studio.tasks.configs import TaskConfig, text_to_speak
from studio.tasks.records import Task
from studio.tasks.runner import TaskContext, TaskKind, TaskRunner

MULTITALK = "multitalk"
# MultiTalk's sampling steps per preset (the engine's own defaults; the UI's slider follows them)
PRESET_STEPS = {"fast": 20, "quality": 40, "low-vram": 40}
PEOPLE = ("S1", "S2")  # left, right
MAX_PROMPT_CHARS = 2000
SPEECH_SHARE = 60.0  # percent of the task's progress the speech takes; the video takes the rest
GPU_WAIT_S = 3600.0  # a MultiTalk job waits this long for its GPUs to be free (other jobs hold them)


Person = Literal["S1", "S2"]  # left, right


class VideoConfig(TaskConfig):
    """A "video" task: two people speak a dialogue script. The images are kept by content on the
    server (`images`: field -> kept name; see VideoService.images_kept)."""

    script: str = Field(
        description="S1 (left) and S2 (right) speak: [S1]/(s1)/Speaker 1:/Name: turns",
        json_schema_extra=text_to_speak("max_dialogue_chars"),
    )
    voices: dict[str, str] = Field(default_factory=dict, description='speaker ("S1" or its name) -> voice id')
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="MultiTalk's scene description")
    resolution: Literal["480p", "720p"] = "480p"
    steps: int | None = Field(
        None, ge=1, le=100, description="MultiTalk's sampling steps (default: the preset's)"
    )
    text_guidance: float = Field(5.0, ge=0.0, le=20.0)
    audio_guidance: float = Field(4.0, ge=0.0, le=20.0)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    engine: Literal["embedded", "multitalk"] = Field(
        "embedded",
        description="multitalk where it is set up (GPU + weights); else the embedded renderer, noted",
    )
    preset: Literal["fast", "quality", "low-vram"] = "fast"
    gpus: Literal["auto", 1, 2, 4, 8] = Field(
        "auto",
        description="GPUs for MultiTalk (one torchrun rank each, FSDP + Ulysses): auto takes every free GPU "
        "the preset can use; low-vram runs on one",
    )
    pause_ms: int = Field(DEFAULT_PAUSE_MS, ge=0, le=10_000, description="silence between turns")
    bboxes: dict[Person, list[float] | None] = Field(
        default_factory=dict, description="where each face is, [x0, y0, x1, y1] in the image's pixels"
    )
    images: dict[Literal["image_left", "image_right", "image"], str] = Field(default_factory=dict)

    def hints(self) -> tuple[Box | None, Box | None]:
        """The given boxes, S1's then S2's (None where detection is to find the face)."""
        left, right = (
            Box.parse(self.bboxes[p], f"bboxes.{p}") if self.bboxes.get(p) is not None else None
            for p in PEOPLE
        )
        return left, right

    def dialogue(self) -> DialogueConfig:
        """What the dialogue service makes of the script: the speech and its subtitles."""
        return DialogueConfig(script=self.script, voices=self.voices, format="wav", pause_ms=self.pause_ms)


def parse_bboxes(text: str) -> dict[str, list[float] | None]:
    """The API's `bboxes` field: JSON {"S1": [x0, y0, x1, y1], "S2": [...]} or a list of two boxes."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(
            f"bboxes is not valid JSON ({error.msg} at character {error.pos})", "bad_bbox"
        ) from None
    if isinstance(value, list) and len(value) == 2:
        value = dict(zip(PEOPLE, value, strict=True))
    if not isinstance(value, dict):
        raise BadInput(
            'bboxes must be {"S1": [x0, y0, x1, y1], "S2": [x0, y0, x1, y1]} or a list of two boxes',
            "bad_bbox",
        )
    for person, box in value.items():
        if box is not None:
            Box.parse(box, f"bboxes.{person}")
    return value


class VideoService:
    """Checks video requests, keeps their images, and runs the "video" task (speech, then picture)."""

    def __init__(
        self, dialogue: DialogueService, registry: EngineRegistry, upload_dir: Path, runner: TaskRunner
    ) -> None:
        self.dialogue = dialogue
        self.registry = registry
        self.upload_dir = upload_dir
        self.runner = runner

    def submit(self, config: VideoConfig, uploads: dict[str, bytes], task_name: str, owner: str) -> Task:
        """A video task from the config and its uploaded images (field -> bytes): everything a request
        can get wrong is an error now, and then nothing is kept."""
        with self.images_kept(uploads) as images:
            return self.runner.submit("video", task_name, config.model_copy(update={"images": images}), owner)

    # ---- checking a request: every error here is a 4xx before the task exists ------------------
    @contextmanager
    def images_kept(self, uploads: dict[str, bytes]) -> Iterator[dict[str, str]]:
        """Keep the uploaded images (field -> bytes) by content and give their names (a video
        config's `images`); an error inside the block (the task was refused) removes the ones this
        call added. 415/413 for what is not an image we read."""
        fields = self._image_fields(set(uploads))
        for f in fields:
            load_portrait(uploads[f], f)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        images, added = {}, []
        for f in fields:  # kept as sent; decoded and checked again when used
            images[f] = hashlib.sha256(uploads[f]).hexdigest()[:32]
            path = self.upload_dir / images[f]
            if not path.exists():
                path.write_bytes(uploads[f])
                added.append(path)
        try:
            yield images
        except BaseException:
            for path in added:
                path.unlink(missing_ok=True)
            raise

    def prepare_task(self, config: VideoConfig) -> VideoConfig:
        """A video task's config checked when it is submitted: images, faces, script, voices, GPUs."""
        self._check_gpus(config)
        self._faces(self._portraits(config), config.hints())
        self.plan(config)
        return config

    def _check_gpus(self, config: VideoConfig) -> None:
        """A GPU count is MultiTalk's, and this machine must have that many GPUs (busy ones are waited for)."""
        if config.gpus == "auto":
            return
        if config.engine != MULTITALK:
            raise BadInput(
                f"gpus={config.gpus} is for MultiTalk; the embedded renderer runs on the CPU: "
                "choose engine multitalk, or leave gpus at auto",
                "gpus_need_multitalk",
            )
        if config.preset == "low-vram" and config.gpus > 1:
            raise BadInput(
                "the low-vram preset runs on one GPU (it keeps the DiT on the CPU): ask for 1 GPU, or "
                f"use the fast or quality preset to spread the model over {config.gpus}",
                "bad_gpus",
            )
        have = len(self.registry.allocator.devices)
        if config.gpus > have:
            raise Unavailable(
                f"MultiTalk on {config.gpus} GPUs was asked for, but this machine has {have} "
                f"GPU{'s' if have != 1 else ''}: ask for at most {have}"
                + (" (or auto)" if have else "; MultiTalk needs a CUDA GPU")
                + ", or use the embedded renderer",
                "not_enough_gpus",
            )

    def gpu_count(self, config: VideoConfig) -> int:
        """The GPUs a MultiTalk job leases: the asked count, or for auto the most the preset can use
        among those free now."""
        from engines.multitalk import gpus_for

        if config.gpus != "auto":
            return config.gpus
        allocator = self.registry.allocator
        busy = {gpu for lease in allocator.leases() for gpu in lease.gpus}
        return gpus_for(config.preset, len([d for d in allocator.devices if d.index not in busy]))

    def plan(self, config: VideoConfig) -> list[PlannedTurn]:
        """The dialogue's turns; only S1 (left) and S2 (right) may speak."""
        _, planned = self.dialogue.plan(config.dialogue())
        for p in planned:
            if p.turn.speaker not in PEOPLE:
                label = "" if p.turn.label == p.turn.speaker else f" ({p.turn.label})"
                raise BadInput(
                    f"line {p.turn.line}: {p.turn.speaker}{label} speaks, but the video shows two people: "
                    "S1 (the left portrait) and S2 (the right one); give this line to one of them",
                    "too_many_speakers",
                )
        return planned

    def multitalk_missing(self) -> list[str]:
        """What MultiTalk still needs here, each with how to get it; empty when it can run."""
        try:
            self.registry.capable(VideoMaker, MULTITALK)
        except KeyError:
            return ["the MultiTalk engine is not installed in this studio"]
        except EngineUnavailable:
            status = self.registry.engine(MULTITALK).status()
            return list(status.missing) or [status.state.value]
        return []

    @staticmethod
    def _image_fields(given: set[str]) -> tuple[str, ...]:
        if "image" in given and given & {"image_left", "image_right"}:
            raise BadInput(
                "send either image_left and image_right (one portrait each) or one image holding both, not both kinds",
                "ambiguous_images",
            )
        if "image" in given:
            return ("image",)
        missing = [f for f in ("image_left", "image_right") if f not in given]
        if missing:
            raise BadInput(
                f"{' and '.join(missing)} missing: send image_left (speaks S1) and image_right (speaks S2), "
                "or one image holding both people",
                "missing_image",
            )
        return ("image_left", "image_right")

    def _portraits(self, config: VideoConfig) -> dict[str, Portrait]:
        images = config.images
        fields = self._image_fields(set(images))
        portraits = {}
        for f in fields:
            path = self.upload_dir / Path(str(images[f])).name  # a name, never a path
            if not path.is_file():
                raise BadInput(
                    f"{f}: the uploaded image '{images[f]}' is not on this server; upload it again",
                    "missing_image",
                )
            portraits[f] = load_portrait(path.read_bytes(), f)
        return portraits

    def preview(
        self, uploads: dict[str, bytes], hints: tuple[Box | None, Box | None], resolution: str
    ) -> tuple[np.ndarray, tuple[FaceLayout, FaceLayout]]:
        """The video's frame as it will be composed, each face, mouth and eyes outlined; and the faces
        (in their own image's pixels). Errors are the ones a video request with these images gets."""
        portraits = {f: load_portrait(uploads[f], f) for f in self._image_fields(set(uploads))}
        faces = self._faces(portraits, hints)
        composite = self._compose(portraits, faces, RESOLUTIONS[resolution])
        return draw_layout(composite.frame, list(composite.faces)), faces

    @staticmethod
    def _compose(
        portraits: dict[str, Portrait], faces: tuple[FaceLayout, FaceLayout], size: tuple[int, int]
    ) -> Composite:
        if "image" in portraits:
            return compose_single(portraits["image"].pixels, faces, size)
        return compose_pair(
            portraits["image_left"].pixels, faces[0], portraits["image_right"].pixels, faces[1], size
        )

    @staticmethod
    def _faces(
        portraits: dict[str, Portrait], hints: tuple[Box | None, Box | None]
    ) -> tuple[FaceLayout, FaceLayout]:
        """Each person's face in their own image's pixels (hints are in the uploaded image's pixels)."""
        if "image" in portraits:
            portrait = portraits["image"]
            scaled = tuple(h.scaled(portrait.scale) if h else None for h in hints)
            return locate_two_faces(portrait.pixels, scaled)  # type: ignore[arg-type]
        left, right = portraits["image_left"], portraits["image_right"]
        return (
            locate_face(
                left.pixels,
                hints[0].scaled(left.scale) if hints[0] else None,
                "image_left (the left portrait)",
            ),
            locate_face(
                right.pixels,
                hints[1].scaled(right.scale) if hints[1] else None,
                "image_right (the right portrait)",
            ),
        )

    # ---- the "video" task ------------------------------------------------------------------------
    def task_kind(self) -> TaskKind:
        return TaskKind("video", self.run_task, config=VideoConfig, prepare=self.prepare_task)

    def run_task(self, context: TaskContext) -> dict[str, Any]:
        request: VideoConfig = context.request
        planned = self.plan(request)
        portraits = self._portraits(request)
        faces = self._faces(portraits, request.hints())
        composite = self._compose(portraits, faces, RESOLUTIONS[request.resolution])
        folder = context.folder
        context.progress(0, "speech")
        with context.phase(0, SPEECH_SHARE):
            spoken = self.dialogue.render(planned, request.dialogue(), folder, context)
        tracks = self._tracks(folder)
        result = spoken | {
            "video": "video.mp4",
            "subtitles": "dialogue.srt",
            "resolution": request.resolution,
            "faces": {p: self._face_report(faces[i], portraits, i) for i, p in enumerate(PEOPLE)},
        }
        engine = "embedded"
        if request.engine == MULTITALK:
            missing = self.multitalk_missing()
            if not missing:
                engine = MULTITALK
            else:
                context.log(f"MultiTalk is not set up: {'; '.join(missing)}")
                result["note"] = (
                    f"MultiTalk is not set up ({len(missing)} thing(s) missing, first: {missing[0]}; "
                    "GET /api/v1/engines and the Engines tab list them all): used the embedded renderer"
                )
        if engine == MULTITALK:
            result |= self._multitalk(request, composite, folder, context)
        else:
            if request.prompt:
                context.log("the embedded renderer does not use the scene prompt")
            work = folder / "_video"
            report = render(
                composite,
                tracks,
                folder / "dialogue.wav",
                work / "video.mp4",
                RenderOptions(preset=request.preset, seed=request.seed),
                progress=lambda f: context.progress(
                    SPEECH_SHARE + (100 - SPEECH_SHARE) * f, "rendering video"
                ),
            )
            (work / "video.mp4").replace(folder / "video.mp4")
            context.log(f"rendered {report.frames} frames in {report.seconds:.1f} s")
            result |= report.to_dict() | {
                "layout": {p: composite.faces[i].to_dict() for i, p in enumerate(PEOPLE)},
            }
        return result | {"engine": engine}

    def _tracks(self, folder: Path) -> tuple[Track, Track]:
        """Each person's own audio (their stem; silence for one who never speaks), their turns and
        the phoneme times their engine gave."""
        timing = json.loads((folder / "timing.json").read_text(encoding="utf-8"))
        length = sf.info(str(folder / "dialogue.wav")).frames
        tracks = []
        for person in PEOPLE:
            stem = folder / "stems" / f"{person}.wav"
            audio = sf.read(stem, dtype="float32")[0] if stem.exists() else np.zeros(length, np.float32)
            own = [t for t in timing if t["speaker"] == person]
            phonemes = tuple(
                (str(ph), float(t0), float(t1)) for t in own for ph, t0, t1 in t.get("phonemes", ())
            )
            tracks.append(Track(audio, MIX_RATE, tuple((t["start"], t["end"]) for t in own), phonemes))
        return tracks[0], tracks[1]

    @staticmethod
    def _face_report(face: FaceLayout, portraits: dict[str, Portrait], index: int) -> dict[str, Any]:
        """Where the face was found, in the uploaded image's pixels (what a client gives back as a box)."""
        portrait = (
            portraits["image"] if "image" in portraits else portraits[("image_left", "image_right")[index]]
        )
        return {"box": face.face.scaled(1 / portrait.scale).as_list(), "found": face.found}

    def _multitalk(
        self, request: VideoConfig, composite: Composite, folder: Path, context: TaskContext
    ) -> dict[str, Any]:
        """MultiTalk on the composed frame with each person's track, then muxed with dialogue.wav."""
        from engines.multitalk import (  # only where MultiTalk is set up
            DenoisingProgress,
            MultiTalkRequest,
            clip_count,
        )

        work = folder / "_video"
        work.mkdir(parents=True, exist_ok=True)
        image = work / "composite.png"
        cv2.imwrite(str(image), cv2.cvtColor(composite.frame, cv2.COLOR_RGB2BGR))
        audio = []
        # One track per person, each the whole dialogue long and aligned with it (their sum is
        # dialogue.wav): each speaks at their turns, in the dialogue's order.
        for person in PEOPLE:
            stem = folder / "stems" / f"{person}.wav"
            if not stem.exists():
                length = sf.info(str(folder / "dialogue.wav")).frames
                sf.write(work / f"{person}.wav", np.zeros(length, np.float32), MIX_RATE, subtype="PCM_16")
                stem = work / f"{person}.wav"
            audio.append(stem)
        height = composite.frame.shape[0]
        bboxes = [tuple(Box(r.x0, 0, r.x1, height).as_list()) for r in composite.regions]
        multitalk_request = MultiTalkRequest(
            prompt=request.prompt,
            image=image,
            audio=audio,
            bboxes=bboxes,
            resolution=request.resolution,
            steps=request.steps,  # None: the preset's
            text_guidance=request.text_guidance,
            audio_guidance=request.audio_guidance,
            seed=request.seed,
            preset=request.preset,
        )
        engine = self.registry.capable(VideoMaker, MULTITALK, load=True)
        count = self.gpu_count(request)
        context.progress(SPEECH_SHARE, f"MultiTalk: waiting for {count} GPU(s)")
        lease = self._lease_gpus(context, count)
        seconds = sf.info(str(folder / "dialogue.wav")).duration
        progress = DenoisingProgress(clip_count(seconds, multitalk_request))

        def log(line: str) -> None:
            context.log(line)
            step = progress.read(line)
            if step is not None:
                context.progress(SPEECH_SHARE + (100 - SPEECH_SHARE) * step[0], step[1])

        context.progress(SPEECH_SHARE, f"MultiTalk on {len(lease.gpus)} GPU(s)")
        made = engine.generate(multitalk_request, work, lease, log, lambda: context.cancelled)
        mux(Path(made), folder / "dialogue.wav", folder / "video.mp4")
        return {"layout": {p: {"region": list(bboxes[i])} for i, p in enumerate(PEOPLE)}}

    @staticmethod
    def _lease_gpus(context: TaskContext, count: int) -> Lease:
        """`count` GPUs for this task, waiting (cancellably) while other jobs hold them."""
        deadline = time.monotonic() + GPU_WAIT_S
        while True:
            try:
                return context.lease(count, exclusive=True, timeout=1.0)
            except AllocationError:
                if time.monotonic() > deadline:
                    raise
                context.check_cancelled()


def mux(video: Path, audio: Path, output: Path) -> None:
    """`video`'s picture with `audio` as AAC into `output`: an H.264 stream is copied, anything else encoded."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(video)], capture_output=True, check=False)
    h264 = "Video: h264" in probe.stderr.decode(errors="replace")
    codec = (
        ["-c:v", "copy"]
        if h264
        else ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
    )
    partial = video.with_name("muxed.mp4")
    cmd = [
        ffmpeg,
        "-v",
        "error",
        "-y",
        "-i",
        str(video),
        "-i",
        str(audio),
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        *codec,
    ]
    cmd += ["-c:a", "aac", "-b:a", "160k", "-shortest", "-movflags", "+faststart", str(partial)]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        message = result.stderr.decode(errors="replace")[-500:]
        raise RuntimeError(f"ffmpeg could not put the dialogue audio with MultiTalk's video: {message}")
    partial.replace(output)
