"""Wyoming benchmark: time to first audio over the Wyoming protocol against the raw engine, in one run.

What it measures, for each embedded engine (kokoro with voice jm_kumo, piper with voice joe), on a
3-sentence English text whose first sentence is short (so the studio's quick start, which speaks a
long first sentence in two pieces, does not apply: both paths make the same first sentence):

* raw: `registry.loaded(name).synthesize(text, voice)` in this process: seconds to its first chunk
  (the first sentence), then the rest is drained;
* Wyoming: a real `python app.py` with STUDIO_WYOMING_URI on loopback, asked the way Home Assistant
  asks (the wyoming package's AsyncTcpClient, one `synthesize` event): seconds from writing the
  event to reading the first `audio-chunk` (the connection is opened before the clock starts; its
  cost is printed apart), then the answer is read to `audio-stop`.

Both paths are warmed first (one untimed request each, so model loading is excluded), then run
interleaved for N rounds (raw first on even rounds, Wyoming first on odd: neither always goes
second), strictly one after the other. Each path's median is taken; Wyoming/raw is the overhead of
the protocol path on the first audio (target: <= 1.15). The raw engines and the server get the same
onnxruntime thread setting (the studio's default, resolved once and handed to both).

Run (about a minute on 2 cores with the defaults):

    PYTHONPATH=. .venv/bin/python bench/bench_wyoming.py [--rounds 5] [--engines kokoro,piper]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engines.registry import EngineRegistry

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))

from bench.common import engine_args, log, table  # noqa: E402
from bench.server import SERVER_ENV, Server, free_port  # noqa: E402

VOICES = {"kokoro": "jm_kumo", "piper": "joe"}
TARGET_RATIO = 1.15
TEXT = "The lights are off. The front door is locked for the night. The heating starts at six tomorrow."
WARM_TEXT = "Warming up."
READ_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class WyomingTiming:
    connect: float  # seconds to open the connection (not in `first`)
    first: float  # seconds from writing `synthesize` to the first audio-chunk
    total: float  # seconds from writing `synthesize` to audio-stop
    audio_s: float  # seconds of speech received


@dataclass
class EngineResult:
    name: str
    voice: str
    raw_first: list[float] = field(default_factory=list)  # per round
    raw_total: list[float] = field(default_factory=list)
    wyoming: list[WyomingTiming] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(w.first for w in self.wyoming) / statistics.median(self.raw_first)


def raw_first_sentence(registry: EngineRegistry, name: str, voice: str, text: str) -> tuple[float, float]:
    """(seconds to the engine's first chunk, seconds to its last)."""
    start = time.perf_counter()
    chunks = registry.loaded(name).synthesize(text, voice)
    next(chunks)
    first = time.perf_counter() - start
    for _ in chunks:
        pass
    return first, time.perf_counter() - start


async def wyoming_first_audio(port: int, voice: str, text: str) -> WyomingTiming:
    """Home Assistant's one-shot request, timed: synthesize -> audio-start, audio-chunk..., audio-stop."""
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error
    from wyoming.tts import Synthesize, SynthesizeVoice

    opened = time.perf_counter()
    async with AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=READ_TIMEOUT_S) as client:
        start = time.perf_counter()
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event())
        first, rate, samples = float("nan"), 0, 0
        while (event := await client.read_event()) is not None:
            if AudioStart.is_type(event.type):
                rate = AudioStart.from_event(event).rate
            elif AudioChunk.is_type(event.type):
                if samples == 0:
                    first = time.perf_counter() - start
                samples += len(AudioChunk.from_event(event).audio) // 2
            elif AudioStop.is_type(event.type):
                break
            elif Error.is_type(event.type):
                raise RuntimeError(f"{voice}: the Wyoming server answered {Error.from_event(event)}")
        else:
            raise RuntimeError(f"{voice}: the Wyoming server closed the connection before audio-stop")
        total = time.perf_counter() - start
    return WyomingTiming(start - opened, first, total, samples / rate if rate else 0.0)


def bench_engine(registry: EngineRegistry, port: int, name: str, rounds: int) -> EngineResult:
    voice = VOICES[name]
    result = EngineResult(name, voice)
    log(f"[{name}] warming up (raw, then Wyoming)")
    raw_first_sentence(registry, name, voice, WARM_TEXT)
    asyncio.run(wyoming_first_audio(port, voice, WARM_TEXT))
    for round_index in range(rounds):
        log(f"[{name}] round {round_index + 1}/{rounds}")
        for path in ("raw", "wyoming") if round_index % 2 == 0 else ("wyoming", "raw"):
            if path == "raw":
                first, total = raw_first_sentence(registry, name, voice, TEXT)
                result.raw_first.append(first)
                result.raw_total.append(total)
            else:
                result.wyoming.append(asyncio.run(wyoming_first_audio(port, voice, TEXT)))
    return result


def report(results: list[EngineResult], rounds: int, threads: int, load: tuple[float, float]) -> None:
    def f3(value: float) -> str:
        return f"{value:.3f}"

    print()
    print(f"Time to first audio, {len(TEXT)}-char 3-sentence English text (median of {rounds} rounds):")
    rows = []
    for r in results:
        raw_first = statistics.median(r.raw_first)
        wyoming_first = statistics.median(w.first for w in r.wyoming)
        rows.append(
            [
                r.name,
                r.voice,
                f3(raw_first),
                f3(wyoming_first),
                f3(wyoming_first - raw_first),
                f3(r.ratio),
                f3(statistics.median(w.connect for w in r.wyoming)),
                f3(statistics.median(r.raw_total)),
                f3(statistics.median(w.total for w in r.wyoming)),
                f"{r.wyoming[0].audio_s:.2f}",
            ]
        )
    headers = ["engine", "voice", "raw first s", "Wyoming first s", "Wyoming-raw", "Wyoming/raw"]
    print(table([*headers, "connect s", "raw total s", "Wyoming total s", "audio s"], rows))
    print()
    print("raw first: the engine's first sentence in this process; Wyoming first: synthesize event written")
    print("-> first audio-chunk read, from a live `python app.py` (connection opened before; see connect s).")
    print("Wyoming total includes the 0.18 s pauses the studio puts between sentences (in the audio only).")
    print(f"onnxruntime threads, same in bench and server: {threads} (the studio's default: one per core)")
    print(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    print()
    for r in results:
        verdict = "PASS" if r.ratio <= TARGET_RATIO else "FAIL"
        print(f"{r.name}: {verdict}: Wyoming/raw first audio = {r.ratio:.3f} (target <= {TARGET_RATIO:.2f})")


def main() -> None:
    args = engine_args(__doc__.split("\n\n")[0] if __doc__ else None, VOICES, 5)
    for key, value in SERVER_ENV.items():
        os.environ.setdefault(key, value)

    from engines.gpu import GpuAllocator
    from studio.config import Settings
    from studio.core import build_registry

    started = time.monotonic()
    load_start = os.getloadavg()[0]
    threads = Settings().onnx_threads or os.cpu_count() or 1
    port = free_port()
    env = {"STUDIO_ONNX_THREADS": str(threads), "STUDIO_WYOMING_URI": f"tcp://127.0.0.1:{port}"}
    with tempfile.TemporaryDirectory(prefix="bench-wyoming-") as tmp:
        data_dir = Path(tmp)
        with Server(data_dir, data_dir / "server.log", env) as server:
            log(
                f"starting the server on {server.url}, Wyoming on tcp://127.0.0.1:{port} (data dir {data_dir})"
            )
            registry = build_registry(Settings(data_dir=data_dir, onnx_threads=threads), GpuAllocator())
            for name in args.engines:  # load while the server boots; untimed
                log(f"[{name}] loading the raw engine")
                registry.loaded(name)
            server.wait_ready()
            log(f"server ready ({time.monotonic() - started:.0f} s in)")
            results = [bench_engine(registry, port, name, args.rounds) for name in args.engines]
    report(results, args.rounds, threads, (load_start, os.getloadavg()[0]))
    print(f"\nbench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
