"""Talking-video benchmark: how fast the embedded renderer and the whole pipeline run on this machine.

A dialogue of about `--seconds` (default 30) seconds of speech, alternating [S1]/[S2] turns, is made
into a two-person video from two portraits (crops of scikit-image's astronaut photo, the second one
mirrored and tinted) at `--resolution` (default 480p), 25 fps, preset "fast", through the real
"video" task of a Studio on a fresh data folder: speech (Kokoro, the default voices), mix, per-person
stems, then the embedded renderer (frames piped to the bundled ffmpeg: H.264 + AAC). The voices are
warmed up first, so model loading is not counted.

Printed: audio seconds; the renderer's seconds (composing, drawing every frame and encoding, from
the task's result) and its real-time factor (render seconds / audio seconds: below 1 is faster than
real time); the whole task's wall time (queue to finish) and its factor.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_video.py [--seconds 30] [--resolution 480p|720p]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.config import Settings  # noqa: E402
from studio.core import Studio  # noqa: E402
from studio.services.speech import SpeechRequest  # noqa: E402
from studio.services.video import VideoConfig  # noqa: E402
from studio.tasks.store import TaskStatus  # noqa: E402
from tests.video_checks import VOICES, png, portraits  # noqa: E402

SENTENCES = [
    "Good morning, and welcome back to the show.",
    "Thanks, it is great to be here again.",
    "Today we are talking about how people learn new languages.",
    "I think the first few weeks are always the hardest part.",
    "Why do you say that?",
    "Because everything feels new, and progress is slow at the start.",
    "So what would you tell someone who is just beginning?",
    "Listen a lot, speak a little every day, and do not fear mistakes.",
    "That sounds simple, but it is not always easy.",
    "No, but it works if you keep going for a few months.",
    "What about reading, does that help as well?",
    "Very much, reading gives you words you would never hear in class.",
]
CHARS_PER_SECOND = 14.0  # Kokoro's English, roughly


def script(seconds: float) -> str:
    lines, chars, i = [], 0, 0
    while chars < seconds * CHARS_PER_SECOND:
        sentence = SENTENCES[i % len(SENTENCES)]
        lines.append(f"[S{i % 2 + 1}] {sentence}")
        chars += len(sentence)
        i += 1
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="about how long the dialogue is")
    parser.add_argument("--resolution", choices=("480p", "720p"), default="480p")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(Settings(data_dir=Path(tmp), weights_dir=Path(tmp) / "weights"))
        studio.start()
        try:
            for voice in VOICES.values():  # load the engines before timing anything
                studio.speech.synthesize(SpeechRequest(text="Warming up.", voice=voice))
            left, right = portraits()
            config = VideoConfig(script=script(args.seconds), voices=VOICES, resolution=args.resolution)
            queued = time.monotonic()
            uploads = {"image_left": png(left), "image_right": png(right)}
            task = studio.video.submit(config, uploads, "bench", owner="")
            task = studio.runner.wait(task.task_id)
            wall = time.monotonic() - queued
        finally:
            studio.stop()
    if task.status != TaskStatus.COMPLETED:
        sys.exit(f"the video task {task.status.value}: {task.error_message}")
    result = task.result
    audio = result["duration"]
    render = result["render_seconds"]
    print(f"cores: {os.cpu_count()}, resolution: {result['size']} at 25 fps, {result['frames']} frames")
    print(f"audio: {audio:.1f} s in {result['turns']} turns")
    print(f"renderer (compose + draw + encode): {render:.1f} s, real-time factor {render / audio:.3f}")
    print(f"whole pipeline (speech + mix + render): {wall:.1f} s, real-time factor {wall / audio:.3f}")
    print("renderer faster than real time: " + ("yes" if render < audio else "NO"))


if __name__ == "__main__":
    main()
