"""Checks on a finished talking video, shared by the API and browser tests.

Everything is measured on the MP4 itself with the ffmpeg that imageio-ffmpeg bundles (there is no
ffprobe): its streams as ffmpeg describes them, its audio decoded, and its frames decoded to gray;
the faces are found on the first frame with OpenCV's own cascade, independently of the renderer.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import imageio_ffmpeg
import numpy as np
from scipy.signal import correlate
from skimage import data as skdata

from studio.audio import decode

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d\.\d+)")
STREAM = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (\w+)")
SIZE = re.compile(r"Video: .*?, (\d{2,5})x(\d{2,5})")
FPS = re.compile(r"([\d.]+) fps")

SCRIPT = (
    "[S1] Hello there, it is really good to see you again today.\n"
    "[S2] Thank you so much, it has been a long time since we talked.\n"
    "[S1] Shall we start with the news of the week?\n"
    "[S2] Yes, let us begin right away."
)
VOICES = {"S1": "joe", "S2": "jf_alpha"}  # one Piper voice, one Kokoro voice


def portraits() -> tuple[np.ndarray, np.ndarray]:
    """Two test portraits (RGB) from a real photo: one crop of it, and another crop mirrored and tinted."""
    photo = skdata.astronaut()
    left = np.ascontiguousarray(photo[0:380, 60:460])
    right = photo[20:400, 40:440][:, ::-1].astype(np.float32) * np.array([0.85, 0.95, 1.15], np.float32)
    return left, np.ascontiguousarray(np.clip(right, 0, 255).astype(np.uint8))


def png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


@dataclass(frozen=True)
class Streams:
    duration: float
    video: str
    audio: str
    size: tuple[int, int]
    fps: float


def streams(path: Path) -> Streams:
    """What ffmpeg says the file holds (`ffmpeg -i` prints it and exits with 1: no output given)."""
    text = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, check=False).stderr
    info = text.decode(errors="replace")
    duration = DURATION.search(info)
    codecs = {kind: codec for kind, codec in STREAM.findall(info)}
    size, fps = SIZE.search(info), FPS.search(info)
    assert duration and size and fps and "Video" in codecs and "Audio" in codecs, info
    hours, minutes, seconds = duration.groups()
    return Streams(
        int(hours) * 3600 + int(minutes) * 60 + float(seconds),
        codecs["Video"],
        codecs["Audio"],
        (int(size.group(1)), int(size.group(2))),
        float(fps.group(1)),
    )


def audio_match(video: Path, wav: Path) -> tuple[float, float]:
    """(correlation, lag in seconds) of the video's audio track against the dialogue wav."""
    heard, rate = decode(video, 24000)
    said, _ = decode(wav, 24000)
    n = min(len(heard), len(said))
    heard, said = heard[:n], said[:n]
    window = rate // 10
    scores = correlate(heard, said, mode="full", method="fft")[n - 1 - window : n + window]
    lag = int(np.argmax(scores)) - window
    a, b = (heard[lag:], said[: n - lag]) if lag >= 0 else (heard[: n + lag], said[-lag:])
    return float(np.corrcoef(a, b)[0, 1]), lag / rate


def gray_frames(video: Path, size: tuple[int, int]) -> Any:
    """The video's frames, decoded one at a time to gray (memory stays flat)."""
    width, height = size
    process = subprocess.Popen(
        [FFMPEG, "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        while chunk := process.stdout.read(width * height):
            if len(chunk) < width * height:
                break
            yield np.frombuffer(chunk, np.uint8).reshape(height, width)
    finally:
        process.stdout.close()
        process.wait()


def find_face(gray: np.ndarray) -> tuple[int, int, int, int]:
    """The most certain frontal face (by the cascade's final-stage weight)."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces, _, weights = cascade.detectMultiScale3(
        cv2.equalizeHist(gray), 1.1, 5, minSize=(60, 60), outputRejectLevels=True
    )
    assert len(faces), "no face in this half of the first frame"
    x, y, w, h = faces[int(np.argmax(np.ravel(weights)))]
    return int(x), int(y), int(w), int(h)


@dataclass(frozen=True)
class Motion:
    """Mean frame-to-frame change (gray levels) of a region, in one person's turns and the other's."""

    own_turns: float
    other_turns: float


def motion_by_turn(
    video: Path, timing: list[dict[str, Any]], size: tuple[int, int], fps: float
) -> dict[str, dict[str, Motion]]:
    """For each person (S1 left half, S2 right half): how much their mouth and their forehead change
    during their own turns and during the other's. Frames within 0.15 s of a turn's edges are left out."""
    regions: dict[str, dict[str, tuple[slice, slice]]] = {}
    sums = {p: {r: {"S1": [0.0, 0], "S2": [0.0, 0]} for r in ("mouth", "forehead")} for p in ("S1", "S2")}
    previous = None
    for index, frame in enumerate(gray_frames(video, size)):
        if not regions:
            half = size[0] // 2
            for person, x0 in (("S1", 0), ("S2", half)):
                x, y, w, h = find_face(frame[:, x0 : x0 + half])
                x += x0
                regions[person] = {
                    "mouth": (slice(y + int(0.65 * h), y + int(1.0 * h)), slice(x + w // 4, x + 3 * w // 4)),
                    "forehead": (slice(y, y + int(0.3 * h)), slice(x + w // 4, x + 3 * w // 4)),
                }
        if previous is not None:
            t = (index + 0.5) / fps
            speaker = next((u["speaker"] for u in timing if u["start"] + 0.15 <= t <= u["end"] - 0.15), None)
            if speaker:
                for person, parts in regions.items():
                    for name, (rows, cols) in parts.items():
                        change = np.abs(
                            frame[rows, cols].astype(np.int16) - previous[rows, cols].astype(np.int16)
                        )
                        total = sums[person][name][speaker]
                        total[0] += float(change.mean())
                        total[1] += 1
        previous = frame
    out: dict[str, dict[str, Motion]] = {}
    for person in ("S1", "S2"):
        other = "S2" if person == "S1" else "S1"
        out[person] = {}
        for name in ("mouth", "forehead"):
            own, theirs = sums[person][name][person], sums[person][name][other]
            assert own[1] and theirs[1], f"no frames inside {person}'s or {other}'s turns"
            out[person][name] = Motion(own[0] / own[1], theirs[0] / theirs[1])
    return out


def check_video(video: Path, wav: Path, timing: list[dict[str, Any]]) -> dict[str, Any]:
    """Every check of a finished video; returns the measured numbers (for the test's messages)."""
    info = streams(video)
    assert (info.video, info.audio) == ("h264", "aac"), info
    said = decode(wav)
    length = len(said[0]) / said[1]
    assert abs(info.duration - length) < 0.1, (info.duration, length)
    frames = sum(1 for _ in gray_frames(video, info.size))
    assert abs(frames / info.fps - length) < 0.1, (frames, info.fps, length)
    correlation, lag = audio_match(video, wav)
    assert correlation > 0.95 and abs(lag) < 0.05, (correlation, lag)
    motion = motion_by_turn(video, timing, info.size, info.fps)
    for person in ("S1", "S2"):
        mouth, forehead = motion[person]["mouth"], motion[person]["forehead"]
        # Their mouth moves while they talk, stays (nearly) still while the other talks, and it is
        # the mouth that moves, not just the head.
        assert mouth.own_turns > 3 * mouth.other_turns, (person, mouth)
        assert mouth.own_turns > 2 * forehead.own_turns, (person, mouth, forehead)
    return {"streams": info, "frames": frames, "correlation": correlation, "lag": lag, "motion": motion}
