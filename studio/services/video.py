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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile as sf

from engines.registry import EngineRegistry
from studio.errors import BadInput
from studio.services.dialogue import DEFAULT_PAUSE_MS, MIX_RATE, DialogueRequest, DialogueService, PlannedTurn
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
    ENCODER_PRESETS,
    RESOLUTIONS,
    Composite,
    RenderOptions,
    Track,
    compose_pair,
    compose_single,
    render,
)
from studio.tasks.runner import TaskContext, TaskKind

ENGINES = ("embedded", "multitalk")
MULTITALK = "multitalk"
# MultiTalk's sampling steps per preset (the engine's own defaults; the UI's slider follows them)
PRESET_STEPS = {"fast": 20, "quality": 40, "low-vram": 40}
PEOPLE = ("S1", "S2")  # left, right
MAX_PROMPT_CHARS = 2000
SPEECH_SHARE = 60.0  # percent of the task's progress the speech takes; the video takes the rest


@dataclass
class VideoRequest:
    """What a video task is asked for (the images travel separately: see VideoService.prepare)."""

    script: str
    voices: dict[str, str] = field(default_factory=dict)
    prompt: str = ""
    resolution: str = "480p"
    steps: int | None = None  # None: the preset's
    text_guidance: float = 5.0
    audio_guidance: float = 4.0
    seed: int = 42
    engine: str = "embedded"
    preset: str = "fast"
    pause_ms: int = DEFAULT_PAUSE_MS
    bboxes: dict[str, list[float] | None] = field(default_factory=dict)  # "S1"/"S2" -> [x0, y0, x1, y1]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VideoRequest:
        try:
            steps = config.get("steps")
            return cls(
                script=str(config.get("script", "")),
                voices={str(k): str(v) for k, v in (config.get("voices") or {}).items()},
                prompt=str(config.get("prompt") or ""),
                resolution=str(config.get("resolution", "480p")),
                steps=None if steps is None else int(steps),
                text_guidance=float(config.get("text_guidance", 5.0)),
                audio_guidance=float(config.get("audio_guidance", 4.0)),
                seed=int(config.get("seed", 42)),
                engine=str(config.get("engine") or "embedded"),
                preset=str(config.get("preset", "fast")),
                pause_ms=int(config.get("pause_ms", DEFAULT_PAUSE_MS)),
                bboxes=dict(config.get("bboxes") or {}),
            )
        except (TypeError, ValueError, AttributeError) as error:
            raise BadInput(f"the video config has a value of the wrong type: {error}", "bad_config") from None

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """Option ranges, with the field named (the script and images are checked by the service)."""
        if self.resolution not in RESOLUTIONS:
            raise BadInput(f"resolution must be one of {', '.join(RESOLUTIONS)}", "bad_resolution")
        if self.preset not in ENCODER_PRESETS:
            raise BadInput(f"preset must be one of {', '.join(ENCODER_PRESETS)}", "bad_preset")
        if self.engine not in ENGINES:
            raise BadInput(f"engine must be one of {', '.join(ENGINES)}", "bad_engine")
        if self.steps is not None and not 1 <= self.steps <= 100:
            raise BadInput("steps must be between 1 and 100", "bad_steps")
        for name in ("text_guidance", "audio_guidance"):
            if not 0.0 <= getattr(self, name) <= 20.0:
                raise BadInput(f"{name} must be between 0 and 20", f"bad_{name}")
        if not 0 <= self.seed < 2**31:
            raise BadInput("seed must be between 0 and 2147483647", "bad_seed")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise BadInput(
                f"prompt is {len(self.prompt)} characters; the limit is {MAX_PROMPT_CHARS}", "prompt_too_long"
            )
        unknown = sorted(set(self.bboxes) - set(PEOPLE))
        if unknown:
            raise BadInput(
                f"bboxes are given per person as S1 (left) and S2 (right), not {', '.join(unknown)}",
                "bad_bbox",
            )

    def hints(self) -> tuple[Box | None, Box | None]:
        """The given boxes, S1's then S2's (None where detection is to find the face)."""
        left, right = (
            Box.parse(self.bboxes[p], f"bboxes.{p}") if self.bboxes.get(p) is not None else None
            for p in PEOPLE
        )
        return left, right


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

    def __init__(self, dialogue: DialogueService, registry: EngineRegistry, upload_dir: Path) -> None:
        self.dialogue = dialogue
        self.registry = registry
        self.upload_dir = upload_dir

    # ---- checking a request: every error here is a 4xx before the task exists ------------------
    def prepare(self, request: VideoRequest, uploads: dict[str, bytes]) -> dict[str, Any]:
        """Check the options, the uploaded images (field -> bytes), their faces and the script, then
        keep the images: the task's config. Nothing is kept for a request that is refused; the task's
        `check_config` checks the kept images again when it is submitted."""
        request.check()
        fields = self._image_fields(set(uploads))
        portraits = {f: load_portrait(uploads[f], f) for f in fields}
        self._faces(portraits, request.hints())
        self.plan(request)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        images = {}
        for f in fields:  # kept as sent, by content; decoded and checked again when used
            name = hashlib.sha256(uploads[f]).hexdigest()[:32]
            (self.upload_dir / name).write_bytes(uploads[f])
            images[f] = name
        return request.to_config() | {"images": images}

    def check_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A video task's config, checked when it is submitted: options, images, faces, script, voices."""
        request = VideoRequest.from_config(config)
        request.check()
        self._faces(self._portraits(config), request.hints())
        self.plan(request)
        return config

    def plan(self, request: VideoRequest) -> list[PlannedTurn]:
        """The dialogue's turns; only S1 (left) and S2 (right) may speak."""
        _, planned = self.dialogue.plan(self._dialogue_request(request))
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
            engine = self.registry.engine(MULTITALK)
        except KeyError:
            return ["the MultiTalk engine is not installed in this studio"]
        status = engine.status()
        if status.state.usable:
            return []
        return list(status.missing) or [status.state.value]

    def _dialogue_request(self, request: VideoRequest) -> DialogueRequest:
        return DialogueRequest(
            script=request.script, voices=request.voices, format="wav", pause_ms=request.pause_ms
        )

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

    def _portraits(self, config: dict[str, Any]) -> dict[str, Portrait]:
        images = config.get("images") or {}
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
        return TaskKind("video", self.run_task, check_config=self.check_config)

    def run_task(self, context: TaskContext) -> dict[str, Any]:
        request = VideoRequest.from_config(context.config)
        request.check()
        planned = self.plan(request)
        portraits = self._portraits(context.config)
        faces = self._faces(portraits, request.hints())
        composite = self._compose(portraits, faces, RESOLUTIONS[request.resolution])
        folder = context.folder
        context.progress(0, "speech")
        with context.phase(0, SPEECH_SHARE):
            spoken = self.dialogue.render(planned, self._dialogue_request(request), folder, context)
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
        self, request: VideoRequest, composite: Composite, folder: Path, context: TaskContext
    ) -> dict[str, Any]:
        """MultiTalk on the composed frame with each person's track, then muxed with dialogue.wav."""
        from engines.multitalk import MultiTalkRequest  # only where MultiTalk is set up

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
        engine = self.registry.loaded(MULTITALK)
        context.progress(SPEECH_SHARE, "MultiTalk")
        made = engine.generate(  # type: ignore[attr-defined]
            MultiTalkRequest(
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
            ),
            work,
            context.lease(1, exclusive=True),
            context.log,
            lambda: context.cancelled,
        )
        mux(Path(made), folder / "dialogue.wav", folder / "video.mp4")
        return {"layout": {p: {"region": list(bboxes[i])} for i, p in enumerate(PEOPLE)}}


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
