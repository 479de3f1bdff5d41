"""The embedded talking-video renderer (CPU, always available): portraits in, H.264 + AAC MP4 out.

Two portraits are composed side by side at the chosen resolution (or one image holding both is
fitted to the frame). Each person's mouth opens with the loudness of their own audio track, closes
on hisses (a bright spectrum) and between syllables; their eyes blink at random intervals; their
head sways a little, more while they talk; and a bar lights up under whoever holds the floor. Each
frame is made from the still composite by editing small regions around the faces (a remap for the
jaw, a painted mouth cavity and eyelids, an affine head warp blended in with a feathered mask), and
is piped raw into the ffmpeg that imageio-ffmpeg bundles, which encodes H.264 and muxes the
dialogue audio as AAC.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from studio.services.portrait import Box, FaceLayout

FPS = 25
RESOLUTIONS: dict[str, tuple[int, int]] = {"480p": (848, 480), "720p": (1280, 720)}  # width x height, mod 16
# preset -> (x264 preset, CRF): the embedded renderer's share of the presets
ENCODER_PRESETS: dict[str, tuple[str, int]] = {
    "fast": ("veryfast", 23),
    "quality": ("medium", 18),
    "low-vram": ("veryfast", 23),
}
FACE_SHARE = 0.42  # a face's height as a share of the frame's in the composite
CUE_COLOUR = np.array([255, 190, 20], np.float32)  # amber bar under the person who talks
CAVITY_COLOUR = np.array([74, 28, 32], np.float32)
OPEN_RANGE_DB = 28.0  # loudness below the person's speech level over which the mouth goes from open to shut
FRICATIVE_HZ = (2500.0, 5000.0)  # spectral centroid over which a sound counts as a hiss: the mouth narrows
# How far the mouth may open on a phoneme, where the engine gives phoneme times: the lips meet on
# p/b/m and the lower lip meets the teeth on f/v, however loud the sound around them.
LIP_LIMIT = {"p": 0.05, "b": 0.05, "m": 0.05, "f": 0.35, "v": 0.35}


@dataclass(frozen=True)
class Composite:
    """The still frame everything is drawn on, the people in it (frame coordinates), and their regions."""

    frame: np.ndarray  # H x W x 3 RGB
    faces: tuple[FaceLayout, FaceLayout]  # left (S1), right (S2)
    regions: tuple[Box, Box]  # the part of the frame that belongs to each person


@dataclass(frozen=True)
class Track:
    """One person's own audio (the whole dialogue's length, silent outside their turns), their
    turns, and where the engine gave them, their phonemes' times."""

    audio: np.ndarray  # mono float32
    sample_rate: int
    turns: tuple[tuple[float, float], ...]  # (start, end) seconds
    phonemes: tuple[tuple[str, float, float], ...] = ()  # (IPA phoneme, start, end) seconds


@dataclass(frozen=True)
class RenderOptions:
    """How to render (the frame size is the composite's): encoder preset, the seed of blinks and head
    motion, frame rate."""

    preset: str = "fast"
    seed: int = 0
    fps: int = FPS


@dataclass(frozen=True)
class RenderReport:
    """What a render made and how long it took."""

    frames: int
    seconds: float  # wall time of rendering and encoding
    size: tuple[int, int]
    fps: int

    def to_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "render_seconds": round(self.seconds, 2),
            "size": f"{self.size[0]}x{self.size[1]}",
            "fps": self.fps,
        }


# ---- composing -------------------------------------------------------------------------------------


def compose_pair(
    left: np.ndarray, left_face: FaceLayout, right: np.ndarray, right_face: FaceLayout, size: tuple[int, int]
) -> Composite:
    """Two portraits side by side, each cropped around its face, with a thin divider."""
    width, height = size
    half = width // 2
    panels, faces = [], []
    for image, face, x0, panel_width in ((left, left_face, 0, half), (right, right_face, half, width - half)):
        panel, (factor, dx, dy) = _place(image, face.face, (panel_width, height), FACE_SHARE)
        panels.append(panel)
        faces.append(face.scaled(factor, dx + x0, dy))
    frame = np.concatenate(panels, axis=1)
    frame[:, half - 1 : half + 1] = 24
    return Composite(frame, (faces[0], faces[1]), (Box(0, 0, half, height), Box(half, 0, width, height)))


def compose_single(
    image: np.ndarray, faces: tuple[FaceLayout, FaceLayout], size: tuple[int, int]
) -> Composite:
    """One image holding both people, fitted to the frame; each person's region ends halfway between them."""
    width, height = size
    union = Box(
        min(f.face.x0 for f in faces), min(f.face.y0 for f in faces),
        max(f.face.x1 for f in faces), max(f.face.y1 for f in faces),
    )  # fmt: skip
    mean_height = sum(f.face.height for f in faces) / 2
    # Two people in one frame get a little more room around them than one portrait per half.
    frame, (factor, dx, dy) = _place(image, union, size, 0.8 * FACE_SHARE * union.height / mean_height)
    placed = (faces[0].scaled(factor, dx, dy), faces[1].scaled(factor, dx, dy))
    first, second = sorted(placed, key=lambda f: f.face.center[0])  # given boxes may come in either order
    middle = (first.face.x1 + second.face.x0) / 2
    regions = {id(first): Box(0, 0, middle, height), id(second): Box(middle, 0, width, height)}
    return Composite(frame, placed, (regions[id(placed[0])], regions[id(placed[1])]))


def _place(
    image: np.ndarray, target: Box, size: tuple[int, int], share: float
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """`image` scaled and cropped to `size` so that `target` is `share` of the height (or fits the width),
    centred, its middle at 45% of the height; never leaving the image (it is scaled up to cover the
    frame when it must).
    Returns the frame and the (scale, dx, dy) that maps image pixels to frame pixels."""
    width, height = size
    image_height, image_width = image.shape[:2]
    wanted = min(share * height / target.height, 0.92 * width / target.width)  # and all of it in the frame
    factor = max(width / image_width, height / image_height, wanted)
    cx, cy = target.center
    dx = min(0.0, max(width - factor * image_width, width / 2 - factor * cx))
    dy = min(0.0, max(height - factor * image_height, 0.45 * height - factor * cy))
    if factor < 1:  # shrink with area averaging first: a plain warp would alias
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = np.array([[1, 0, dx], [0, 1, dy]], np.float64)
    else:
        matrix = np.array([[factor, 0, dx], [0, factor, dy]], np.float64)
    frame = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return frame, (factor, dx, dy)


# ---- what each frame shows: from the audio and the turns ----------------------------------------------


def mouth_openness(audio: np.ndarray, sample_rate: int, frames: int, fps: int = FPS) -> np.ndarray:
    """Per video frame, how far the mouth is open (0..1), from this person's own audio.

    Loudness in a 50 ms window around the frame's middle, relative to the person's own speech level
    (so a quiet voice still opens its mouth); hisses (bright spectrum) open it less; it opens at once
    and closes over a frame or two, as a jaw does.
    """
    window = int(0.05 * sample_rate)
    padded = np.concatenate(
        [np.zeros(window, np.float32), audio.astype(np.float32), np.zeros(window, np.float32)]
    )
    taper = np.hanning(window).astype(np.float32)
    freqs = np.fft.rfftfreq(window, 1 / sample_rate)
    rms = np.empty(frames, np.float32)
    centroid = np.empty(frames, np.float32)
    for first in range(0, frames, 1000):  # in blocks: memory stays flat however long the dialogue
        index = np.arange(first, min(first + 1000, frames))
        starts = np.clip(
            ((index + 0.5) * sample_rate / fps).astype(np.int64) + window // 2, 0, len(padded) - window
        )
        segments = padded[starts[:, None] + np.arange(window)[None, :]]
        rms[index] = np.sqrt(np.mean(segments**2, axis=1))
        spectrum = np.abs(np.fft.rfft(segments * taper, axis=1))
        centroid[index] = (spectrum @ freqs) / np.maximum(spectrum.sum(axis=1), 1e-9)
    voiced = rms[rms > 1e-4]
    if voiced.size == 0:
        return np.zeros(frames, np.float32)
    reference = float(np.percentile(voiced, 90))
    level_db = 20 * np.log10(np.maximum(rms, 1e-7) / reference)
    hiss = np.clip((centroid - FRICATIVE_HZ[0]) / (FRICATIVE_HZ[1] - FRICATIVE_HZ[0]), 0, 1)
    opening = np.clip(1 + level_db / OPEN_RANGE_DB, 0, 1) * (1 - 0.55 * hiss)
    smoothed = np.empty(frames, np.float32)
    previous = 0.0
    for i, value in enumerate(opening):
        previous = value if value > previous else 0.45 * previous + 0.55 * value
        smoothed[i] = previous
    return smoothed


def shape_by_phonemes(
    openness: np.ndarray, phonemes: tuple[tuple[str, float, float], ...], fps: int = FPS
) -> np.ndarray:
    """`openness` held down (LIP_LIMIT) in the frames a lip-closing phoneme covers most of."""
    shaped = openness.copy()
    for phoneme, start, end in phonemes:
        limit = LIP_LIMIT.get(phoneme)
        if limit is None:
            continue
        # The frames whose middle falls inside the phoneme; a short one still gets its nearest frame.
        first, last = round(start * fps), max(round(start * fps), round(end * fps) - 1)
        shaped[first : last + 1] = np.minimum(shaped[first : last + 1], limit)
    return shaped


def floor_held(
    turns: tuple[tuple[float, float], ...], frames: int, fps: int = FPS, ramp: float = 0.2
) -> np.ndarray:
    """Per frame, 0..1: how strongly the speaker cue shows (ramps in and out over `ramp` seconds)."""
    times = (np.arange(frames) + 0.5) / fps
    held = np.zeros(frames, np.float32)
    for start, end in turns:
        rise = np.clip((times - start + ramp) / ramp, 0, 1)
        fall = np.clip((end + ramp - times) / ramp, 0, 1)
        held = np.maximum(held, np.minimum(rise, fall))
    return held


def blinks(frames: int, rng: np.random.Generator, fps: int = FPS) -> np.ndarray:
    """Per frame, how closed the eyes are (0..1): a 160 ms blink every 2 to 6 seconds."""
    closed = np.zeros(frames, np.float32)
    profile = np.array([0.5, 1.0, 1.0, 0.5], np.float32)
    t = rng.uniform(0.5, 3.0)
    while (start := int(t * fps)) < frames:
        n = min(len(profile), frames - start)
        closed[start : start + n] = profile[:n]
        t += rng.uniform(2.0, 6.0)
    return closed


def head_motion(frames: int, talking: np.ndarray, rng: np.random.Generator, fps: int = FPS) -> np.ndarray:
    """Per frame (angle in degrees, dx, dy as shares of the face height): slow sway, livelier in speech."""
    times = np.arange(frames) / fps
    kernel = np.ones(max(1, int(0.4 * fps))) / max(1, int(0.4 * fps))
    energy = np.convolve(talking, kernel, mode="same")  # the last 0.4 s of talking, smoothed

    def sway(amplitude: float, low: float, high: float) -> np.ndarray:
        freqs, phases = rng.uniform(low, high, 3), rng.uniform(0, 2 * np.pi, 3)
        return (
            amplitude * sum(np.sin(2 * np.pi * f * times + p) for f, p in zip(freqs, phases, strict=True)) / 3
        )

    angle = sway(1.2, 0.05, 0.3) + energy * sway(2.5, 0.4, 1.2)
    dx = sway(0.012, 0.05, 0.25) + energy * sway(0.01, 0.3, 0.9)
    dy = sway(0.008, 0.05, 0.25) + 0.02 * energy  # a slight nod down while talking
    return np.stack([angle, dx, dy], axis=1).astype(np.float32)


# ---- drawing one person ----------------------------------------------------------------------------------


class _Head:
    """One person's head in the frame, with all that drawing it needs precomputed: its patch of the
    still frame, the jaw's warp field, the eyelids, and the feathered mask that blends its motion in."""

    def __init__(self, frame: np.ndarray, face: FaceLayout, region: Box) -> None:
        height, width = frame.shape[:2]
        box = face.face
        fw, fh = box.width, box.height
        area = Box(box.x0 - 0.45 * fw, box.y0 - 0.6 * fh, box.x1 + 0.45 * fw, box.y1 + 0.45 * fh)
        area = Box(max(area.x0, region.x0), area.y0, min(area.x1, region.x1), area.y1).clipped(width, height)
        self.rows, self.cols = area.slices()
        self.patch = frame[self.rows, self.cols].copy()
        self.still = self.patch.astype(np.float32)
        self.size = (self.patch.shape[1], self.patch.shape[0])
        self.face = face.scaled(1.0, -self.cols.start, -self.rows.start)  # in this patch's coordinates
        self.face_height = fh
        self.pivot = (self.face.face.center[0], self.face.face.y1 + 0.1 * fh)  # about the neck
        self.mask = self._feather_mask()
        self._prepare_mouth()
        self.eyes = [self._closed_eye(eye) for eye in self.face.eyes if self._inside(eye)]

    def _inside(self, box: Box) -> bool:
        """Whether some of `box` (an eye) is in this head's patch: a face cut by the frame may lose one."""
        visible = box.clipped(*self.size)
        return visible.width >= 2 and visible.height >= 2

    def _feather_mask(self) -> np.ndarray:
        w, h = self.size
        cx, cy = self.face.face.center
        fw, fh = self.face.face.width, self.face.face.height
        mask = np.zeros((h, w), np.float32)
        cv2.ellipse(
            mask, (round(cx), round(cy - 0.05 * fh)), (round(0.72 * fw), round(0.85 * fh)), 0, 0, 360, 1.0, -1
        )
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.1 * fw))
        edge = max(2, round(0.06 * fw))  # nothing moves at the region's edge: no seams
        ramp_x = np.clip(np.minimum(np.arange(w), np.arange(w)[::-1]) / edge, 0, 1)
        ramp_y = np.clip(np.minimum(np.arange(h), np.arange(h)[::-1]) / edge, 0, 1)
        return (mask * ramp_y[:, None] * ramp_x[None, :])[..., None]

    def _prepare_mouth(self) -> None:
        w, h = self.size
        mouth, fh = self.face.mouth, self.face_height
        mx, my = mouth.center
        self.mouth_centre = (mx, my)
        self.mouth_width = mouth.width
        self.jaw_drop = 0.07 * fh  # at full opening
        chin = self.face.face.y1 + 0.05 * fh
        area = Box(mx - 0.85 * mouth.width, my - 0.12 * fh, mx + 0.85 * mouth.width, chin + 0.25 * fh)
        area = area.clipped(w, h)
        self.mouth_rows, self.mouth_cols = area.slices()
        ys = np.arange(self.mouth_rows.start, min(self.mouth_rows.stop, h), dtype=np.float32)
        xs = np.arange(self.mouth_cols.start, min(self.mouth_cols.stop, w), dtype=np.float32)
        self.grid_x, self.grid_y = np.meshgrid(xs, ys)
        across = np.clip(1 - np.abs(xs - mx) / (0.85 * mouth.width), 0, 1)
        across = np.clip(across * 1.6, 0, 1) ** 0.8
        soft = 0.02 * fh
        below_lip = np.clip((ys - my + soft) / (2 * soft), 0, 1)  # 0 above the lips, 1 below them
        to_chin = np.clip((chin + 0.25 * fh - ys) / (0.25 * fh), 0, 1)  # fades out under the chin
        lift = (
            -0.15
            * np.clip((my - ys) / (0.08 * fh), 0, 1)
            * np.clip((ys - my + 0.12 * fh) / (0.04 * fh), 0, 1)
        )
        self.drop_field = ((below_lip * to_chin + lift)[:, None] * across[None, :]).astype(np.float32)

    def _closed_eye(self, eye: Box) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """An eyelid for one eye: skin from under the eye, a lash line; with its soft mask."""
        patch = self.patch
        h, w = patch.shape[:2]
        area = Box(eye.x0, eye.y0, eye.x1, eye.y1).clipped(w, h)
        rows, cols = area.slices()
        cx, cy = eye.center
        below = Box(
            cx - 0.25 * eye.width, cy + 0.3 * eye.height, cx + 0.25 * eye.width, cy + 0.5 * eye.height
        )
        below_rows, below_cols = below.clipped(w, h).slices()
        sample = patch[below_rows, below_cols].reshape(-1, 3)
        skin = np.median(sample, axis=0) if sample.size else np.array([200, 160, 140])
        region = patch[rows, cols]
        lid = np.empty(region.shape, np.float32)
        lid[:] = skin
        mask = np.zeros(region.shape[:2], np.float32)
        centre = (round(cx - cols.start), round(cy - rows.start))
        axes = (max(2, round(0.42 * eye.width)), max(1, round(0.2 * eye.height)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(0.8, 0.05 * eye.width))[..., None]
        lash = (0.55 * skin).tolist()  # the closed lid's lash line, curving down
        top = (centre[0], centre[1] - round(0.3 * axes[1]))
        cv2.ellipse(lid, top, axes, 0, 15, 165, lash, max(1, round(0.04 * eye.height)), cv2.LINE_AA)
        return rows, cols, lid, mask

    def draw(self, frame: np.ndarray, opening: float, closed: float, motion: np.ndarray) -> None:
        """Draw this head into `frame` (in place): mouth, eyelids, then the whole head moved."""
        patch = self.patch.copy()
        if opening > 0.02:
            self._open_mouth(patch, opening)
        if closed > 0:
            for rows, cols, lid, mask in self.eyes:
                region = patch[rows, cols].astype(np.float32)
                alpha = mask * closed
                patch[rows, cols] = (region * (1 - alpha) + lid * alpha).astype(np.uint8)
        angle, dx, dy = motion
        matrix = cv2.getRotationMatrix2D(self.pivot, float(angle), 1.0)
        matrix[:, 2] += (dx * self.face_height, dy * self.face_height)
        moved = cv2.warpAffine(
            patch, matrix, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        frame[self.rows, self.cols] = (self.still + (moved - self.still) * self.mask).astype(np.uint8)

    def _open_mouth(self, patch: np.ndarray, opening: float) -> None:
        if self.grid_x.size == 0:  # the mouth is outside the frame
            return
        drop = opening * self.jaw_drop
        rows, cols = self.mouth_rows, self.mouth_cols
        source = patch[rows, cols].copy()
        map_y = self.grid_y - drop * self.drop_field - rows.start
        map_x = self.grid_x - cols.start
        area = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if drop >= 1.0:  # the gap between the lips shows the inside of the mouth
            mx, my = self.mouth_centre
            centre = (round(mx - cols.start), round(my - rows.start + drop / 2))
            axes = (
                max(2, round(0.28 * self.mouth_width * (0.85 + 0.15 * opening))),
                max(1, round(0.5 * drop)),
            )
            mask = np.zeros(area.shape[:2], np.float32)
            cv2.ellipse(mask, centre, axes, 0, 0, 360, 0.92, -1, cv2.LINE_AA)
            alpha = cv2.GaussianBlur(mask, (0, 0), 0.8)[..., None]
            area = (area * (1 - alpha) + CAVITY_COLOUR * alpha).astype(np.uint8)
        patch[rows, cols] = area


# ---- the renderer ---------------------------------------------------------------------------------------


class FfmpegError(RuntimeError):
    """The bundled ffmpeg failed; the message carries its own words."""


def render(
    composite: Composite,
    tracks: tuple[Track, Track],
    audio_path: Path,
    output: Path,
    options: RenderOptions,
    progress: Callable[[float], None] | None = None,
) -> RenderReport:
    """Render the talking video of `composite` with the dialogue in `audio_path` into `output` (MP4).

    `progress` gets 0..1 as frames are made; it may raise to stop (the partial file is removed).
    """
    started = time.monotonic()
    height, width = composite.frame.shape[:2]
    duration = max(len(t.audio) / t.sample_rate for t in tracks)
    frames = max(1, round(duration * options.fps))
    rng = np.random.default_rng(options.seed)
    heads = [
        _Head(composite.frame, face, region)
        for face, region in zip(composite.faces, composite.regions, strict=True)
    ]
    openness = [
        shape_by_phonemes(
            mouth_openness(t.audio, t.sample_rate, frames, options.fps), t.phonemes, options.fps
        )
        for t in tracks
    ]
    held = [floor_held(t.turns, frames, options.fps) for t in tracks]
    closed = [blinks(frames, rng, options.fps) for _ in tracks]
    motion = [head_motion(frames, openness[i] * held[i], rng, options.fps) for i in range(len(tracks))]
    cues = [
        _cue_area(face, region, width, height)
        for face, region in zip(composite.faces, composite.regions, strict=True)
    ]
    base = composite.frame
    x264_preset, crf = ENCODER_PRESETS[options.preset]
    output.parent.mkdir(parents=True, exist_ok=True)
    log_path = output.with_suffix(".ffmpeg.log")
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(options.fps), "-i", "pipe:0",
        "-i", str(audio_path),
        "-map", "0:v:0", "-map", "1:a:0",
        "-c:v", "libx264", "-preset", x264_preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart",
        str(output),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        encoder = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=log)
        assert encoder.stdin is not None
        try:
            frame = np.empty_like(base)
            for index in range(frames):
                np.copyto(frame, base)
                for person, head in enumerate(heads):
                    head.draw(
                        frame,
                        float(openness[person][index]),
                        float(closed[person][index]),
                        motion[person][index],
                    )
                    _draw_cue(frame, cues[person], float(held[person][index]))
                encoder.stdin.write(frame.tobytes())
                if progress and index % options.fps == 0:
                    progress(index / frames)
            encoder.stdin.close()
            code = encoder.wait()
        except BrokenPipeError:
            code = encoder.wait()
        except BaseException:
            encoder.kill()
            encoder.wait()
            output.unlink(missing_ok=True)
            raise
    message = log_path.read_text(errors="replace").strip()
    log_path.unlink(missing_ok=True)
    if code != 0:
        output.unlink(missing_ok=True)
        raise FfmpegError(f"ffmpeg could not write the video (exit {code}): {message[-500:] or 'no message'}")
    return RenderReport(frames, time.monotonic() - started, (width, height), options.fps)


def _cue_area(face: FaceLayout, region: Box, width: int, height: int) -> tuple[slice, slice]:
    thickness = max(4, round(height / 80))
    margin = max(6, round(height / 40))
    cx = face.face.center[0]
    half = 0.9 * face.face.width
    x0, x1 = max(region.x0 + margin, cx - half), min(region.x1 - margin, cx + half)
    return slice(height - margin - thickness, height - margin), slice(int(x0), math.ceil(x1))


def _draw_cue(frame: np.ndarray, area: tuple[slice, slice], strength: float) -> None:
    if strength <= 0.01:
        return
    rows, cols = area
    alpha = 0.9 * strength
    frame[rows, cols] = (frame[rows, cols].astype(np.float32) * (1 - alpha) + CUE_COLOUR * alpha).astype(
        np.uint8
    )
