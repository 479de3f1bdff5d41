"""Audiobook benchmark: speed, real-time factor, memory against book length, and the quality gate's cost.

    python bench/bench_audiobook.py [--minutes 5 30] [--voice jm_kumo] [--no-gate-run]

Each book is plain text sized by length (~14 characters per second of speech: `--minutes` each),
made of English paragraphs cycled from a short story with quoted speech, split into chapters of
~5 minutes ("Chapter N" lines). Every run is a FRESH subprocess (`--child`) that builds a Studio on a
temporary data dir, warms the engines with one sentence (its RSS then is the baseline), runs the
"audiobook" task's work (`AudiobookService.render`, narrator + character voice) while a thread
samples RSS every 0.25 s, and reports: characters per second, RTF (wall / audio seconds), peak RSS
and its growth over the baseline. Flat memory means the growth does not scale with the book. The
shortest book is also made with the quality gate off: the gate's overhead is the extra wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import log, table  # noqa: E402

CHARS_PER_SECOND = 14.0
CHAPTER_SECONDS = 300
STORY = [
    "The lighthouse keeper climbed the stairs each evening before the sun went down.",
    '"Another quiet night," she said to the gulls on the rail.',
    "Far out on the water, a small boat was fighting the wind and the grey waves.",
    "She lit the lamp, and its long beam swept across the harbour and the rocks.",
    '"Hold on, we are nearly there," the fisherman called to his son.',
    "By midnight the boat was safe in the harbour, and the keeper made a pot of tea.",
]


def book_text(minutes: float) -> str:
    """Chapters of ~5 minutes, paragraphs of two sentences cycled from STORY, ~`minutes` of speech."""
    total = int(minutes * 60 * CHARS_PER_SECOND)
    chapters, written, n = [], 0, 0
    while written < total:
        paragraphs, size = [], 0
        while size < min(CHAPTER_SECONDS * CHARS_PER_SECOND, total - written):
            paragraph = f"{STORY[n % len(STORY)]} {STORY[(n + 1) % len(STORY)]}"
            paragraphs.append(paragraph)
            size += len(paragraph)
            n += 2
        chapters.append(f"Chapter {len(chapters) + 1}\n\n" + "\n\n".join(paragraphs))
        written += size
    return "\n\n".join(chapters)


def child(minutes: float, voice: str, character: str, gate: bool) -> dict[str, float]:
    """One book in this process: the numbers, as JSON on stdout."""
    from studio.config import Settings
    from studio.core import Studio
    from studio.services.audiobook import AudiobookConfig
    from studio.services.speech import SpeechRequest

    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(Settings(data_dir=Path(tmp)))
        for name in {voice, character}:  # engines loaded (and the ASR, when the gate is on)
            studio.speech.synthesize(SpeechRequest("Warm up.", name))
        if gate:
            studio.transcriber.transcribe(np.zeros(16000, np.float32), 16000, "en")
        process = psutil.Process()
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.25):
                peak[0] = max(peak[0], process.memory_info().rss)

        threading.Thread(target=sample, daemon=True).start()
        text = book_text(minutes)
        service = studio.audiobook
        kept = service.keep(text.encode(), "bench.txt")
        config = service.prepare_task(
            AudiobookConfig(book=kept, voice=voice, character_voice=character, quality_check=gate)
        )
        started = time.monotonic()
        result = service.render(config, Path(tmp) / "book", lambda percent, step: None, lambda line: None)
        wall = time.monotonic() - started
        done.set()
        peak[0] = max(peak[0], process.memory_info().rss)
    return {
        "minutes": minutes,
        "characters": len(text),
        "audio_s": result["duration"],
        "wall_s": wall,
        "chars_per_s": len(text) / wall,
        "rtf": wall / result["duration"],
        "baseline_mb": baseline / 2**20,
        "peak_mb": peak[0] / 2**20,
        "growth_mb": (peak[0] - baseline) / 2**20,
        "gate": gate,
        "retaken": result.get("quality", {}).get("retaken", 0),
    }


def run(minutes: float, voice: str, character: str, gate: bool) -> dict[str, float]:
    args = [
        sys.executable,
        __file__,
        "--child",
        str(minutes),
        "--voice",
        voice,
        "--character-voice",
        character,
    ]
    log(f"book of {minutes} min, quality gate {'on' if gate else 'off'}…")
    done = subprocess.run(
        [*args, *([] if gate else ["--no-gate"])], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 30.0], help="book lengths")
    parser.add_argument("--voice", default="jm_kumo")
    parser.add_argument("--character-voice", default="jf_alpha")
    parser.add_argument("--no-gate-run", action="store_true", help="skip the run without the quality gate")
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-gate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.voice, args.character_voice, not args.no_gate)))
        return
    runs = [run(m, args.voice, args.character_voice, True) for m in sorted(args.minutes)]
    if not args.no_gate_run:
        runs.append(run(min(args.minutes), args.voice, args.character_voice, False))
    rows = [
        [
            f"{r['minutes']:g} min, gate {'on' if r['gate'] else 'off'}",
            f"{r['characters']}",
            f"{r['audio_s']:.0f}",
            f"{r['wall_s']:.0f}",
            f"{r['chars_per_s']:.1f}",
            f"{r['rtf']:.2f}",
            f"{r['baseline_mb']:.0f}",
            f"{r['peak_mb']:.0f}",
            f"{r['growth_mb']:.0f}",
            f"{r['retaken']}",
        ]
        for r in runs
    ]
    headers = [
        "book",
        "chars",
        "audio s",
        "wall s",
        "chars/s",
        "RTF",
        "base MB",
        "peak MB",
        "growth MB",
        "retaken",
    ]
    print(table(headers, rows))
    gated = [r for r in runs if r["gate"]]
    if len(gated) > 1:
        print(
            f"memory: peak {gated[0]['peak_mb']:.0f} MB at {gated[0]['minutes']:g} min vs "
            f"{gated[-1]['peak_mb']:.0f} MB at {gated[-1]['minutes']:g} min"
        )
    if not args.no_gate_run:
        on, off = gated[0], runs[-1]
        print(
            f"quality gate: {on['wall_s'] - off['wall_s']:.0f} s more for {on['minutes']:g} min "
            f"(+{100 * (on['wall_s'] / off['wall_s'] - 1):.0f}% wall time)"
        )


if __name__ == "__main__":
    main()
