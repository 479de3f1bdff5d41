"""Speech benchmark: the raw embedded engines against the studio's HTTP API, in one run.

What it measures, for each embedded engine (kokoro with voice jf_alpha, piper with voice joe):

* Whole-text synthesis of a fixed set of short English texts (1 to 4 sentences each), two ways:
  - raw: `registry.loaded(name).synthesize(...)` in this process, chunks concatenated, no HTTP;
  - API: `POST /api/v1/tts/synthesize` (format wav) to a real `python app.py` server on loopback,
    timed from sending the request to having the whole body.
  Both paths are warmed first (one untimed request each, so model loading is excluded), then run
  interleaved text by text for N rounds (raw, API, then API, raw: neither path always goes second)
  so machine noise hits both alike. Each text's median over the rounds is taken; an engine's time
  is the sum of those medians. API/raw is the overhead of the server path (target: <= 1.10). RTF
  is wall seconds per second of speech; both RTFs use the raw engine's speech length, so
  RTF API / RTF raw = API/raw. CPU seconds are recorded too (this process's for raw, the server
  process's for the API), a cross-check less sensitive to other load on the machine; the server's
  CPU while idle is probed at the end, since it also lands in the API's CPU seconds.
* Streaming: time to first audio on a 4-sentence text, `POST /v1/audio/speech` with
  response_format "pcm" read with httpx streaming (seconds to the first non-empty body chunk, and
  to the whole body), against the raw engine's time to its first chunk and to its last.
* A sanity check: the API's wav is decoded (soundfile) and its length compared with the raw
  engine's speech plus the 0.18 s gaps the studio puts between sentences (warning beyond 15%).

Fairness: the raw engines here and the server get the same onnxruntime thread setting (the
studio's default, resolved once and handed to both); they never synthesize at once (strictly
sequential), so they do not compete for cores, though the idle server keeps waking up in the
background during raw runs (its idle CPU is printed). The thread setting is printed with the results.

Run (about 3 minutes on 2 cores with the defaults):

    PYTHONPATH=. .venv/bin/python bench/bench_speech.py [--rounds N] [--engines kokoro,piper]
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from engines.registry import EngineRegistry

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))

from bench.common import engine_args, log, table  # noqa: E402
from bench.server import SERVER_ENV, Server  # noqa: E402

VOICES = {"kokoro": "jf_alpha", "piper": "joe"}
TARGET_RATIO = 1.10
AUDIO_TOLERANCE = 0.15
IDLE_PROBE_S = 3.0
WARM_TEXT = "Warming up."
TEXTS = (
    "Welcome to the studio.",
    "The sky is clear this morning. Rain comes later.",
    "Check the settings first. Save your work. Then press start.",
    "The train leaves at nine. Bring a warm coat. It gets cold at night. We return on Sunday.",
    "Reading aloud helps children learn new words. It builds their confidence too.",
)
STREAM_TEXT = TEXTS[3]  # four sentences


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sum_of_medians(per_text: list[list[float]]) -> float:
    """Each text's median over the rounds, summed over the texts."""
    return sum(median(times) for times in per_text)


def idle_cpu_share(server: Server, seconds: float = IDLE_PROBE_S) -> float:
    """Share of one core the server burns while no request is in flight (it also runs in the API CPU)."""
    start = server.cpu_seconds()
    time.sleep(seconds)
    return (server.cpu_seconds() - start) / seconds


# ---- measurements ----------------------------------------------------------------------------------
@dataclass
class EngineResult:
    name: str
    voice: str
    sample_rate: int
    sentences: list[int] = field(default_factory=list)  # per text
    raw_audio_s: list[float] = field(default_factory=list)  # per text, speech only
    api_audio_s: list[float] = field(default_factory=list)  # per text, decoded from the API's wav
    raw_times: list[list[float]] = field(default_factory=list)  # per text, per round: wall seconds
    api_times: list[list[float]] = field(default_factory=list)
    raw_cpu: list[list[float]] = field(default_factory=list)  # per text, per round: CPU seconds
    api_cpu: list[list[float]] = field(default_factory=list)  # (the server process's)
    stream_raw_first: list[float] = field(default_factory=list)  # per round
    stream_raw_total: list[float] = field(default_factory=list)
    stream_api_first: list[float] = field(default_factory=list)
    stream_api_total: list[float] = field(default_factory=list)
    stream_api_audio_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def audio_s(self) -> float:
        return sum(self.raw_audio_s)

    @property
    def raw_s(self) -> float:
        return sum_of_medians(self.raw_times)

    @property
    def api_s(self) -> float:
        return sum_of_medians(self.api_times)

    @property
    def ratio(self) -> float:
        return self.api_s / self.raw_s

    @property
    def raw_cpu_s(self) -> float:
        return sum_of_medians(self.raw_cpu)

    @property
    def api_cpu_s(self) -> float:
        return sum_of_medians(self.api_cpu)


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds
    cpu: float  # CPU seconds of the process that synthesized


def raw_synthesize(
    registry: EngineRegistry, name: str, voice: str, text: str
) -> tuple[Timing, np.ndarray, int]:
    """(timing, audio, sentence count) for one text through the engine itself."""
    start, cpu_start = time.perf_counter(), time.process_time()
    chunks = list(registry.loaded(name).synthesize(text, voice))
    audio = np.concatenate([chunk.audio for chunk in chunks])
    return Timing(time.perf_counter() - start, time.process_time() - cpu_start), audio, len(chunks)


def api_synthesize(
    client: httpx.Client, server_cpu: Callable[[], float], name: str, voice: str, text: str
) -> tuple[Timing, bytes]:
    """(timing, wav bytes) for one text through `/api/v1/tts/synthesize`."""
    body = {"text": text, "voice_id": voice, "engine": name, "format": "wav"}
    cpu_start = server_cpu()
    start = time.perf_counter()
    response = client.post("/api/v1/tts/synthesize", json=body)
    content = response.content
    elapsed = time.perf_counter() - start
    cpu = server_cpu() - cpu_start
    if response.status_code != 200:
        raise RuntimeError(
            f"{name}: /api/v1/tts/synthesize answered {response.status_code}: {response.text[:500]}"
        )
    return Timing(elapsed, cpu), content


def raw_stream(registry: EngineRegistry, name: str, voice: str, text: str) -> tuple[float, float]:
    """(seconds to the first chunk, seconds to the last) from the engine's sentence generator."""
    start = time.perf_counter()
    chunks = registry.loaded(name).synthesize(text, voice)
    next(chunks)
    first = time.perf_counter() - start
    for _ in chunks:
        pass
    return first, time.perf_counter() - start


def api_stream(client: httpx.Client, name: str, voice: str, text: str) -> tuple[float, float, int]:
    """(seconds to the first non-empty body chunk, seconds to the whole body, body bytes), pcm."""
    body = {"model": name, "input": text, "voice": voice, "response_format": "pcm"}
    start = time.perf_counter()
    first = float("nan")
    size = 0
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(
                f"{name}: /v1/audio/speech answered {response.status_code}: {response.text[:500]}"
            )
        for piece in response.iter_raw():
            if piece and size == 0:
                first = time.perf_counter() - start
            size += len(piece)
    return first, time.perf_counter() - start, size


def check_lengths(result: EngineResult, gap_s: float) -> None:
    for i, (raw, api, count) in enumerate(
        zip(result.raw_audio_s, result.api_audio_s, result.sentences, strict=True)
    ):
        expected = raw + gap_s * (count - 1)
        if abs(api - expected) > AUDIO_TOLERANCE * expected:
            result.warnings.append(
                f"text {i + 1}: API audio {api:.2f} s vs raw {raw:.2f} s + gaps = {expected:.2f} s "
                f"(off by more than {AUDIO_TOLERANCE:.0%})"
            )


def bench_engine(
    registry: EngineRegistry, client: httpx.Client, server_cpu: Callable[[], float], name: str, rounds: int
) -> EngineResult:
    from studio.services.speech import SENTENCE_GAP_S

    voice = VOICES[name]
    engine = registry.loaded(name)
    result = EngineResult(name, voice, engine.info.sample_rate)
    result.raw_times = [[] for _ in TEXTS]
    result.api_times = [[] for _ in TEXTS]
    result.raw_cpu = [[] for _ in TEXTS]
    result.api_cpu = [[] for _ in TEXTS]

    log(f"[{name}] warming up (raw, then API)")
    raw_synthesize(registry, name, voice, WARM_TEXT)
    api_synthesize(client, server_cpu, name, voice, WARM_TEXT)

    def run_raw(text: str) -> tuple[Timing, np.ndarray, int]:
        return raw_synthesize(registry, name, voice, text)

    def run_api(text: str) -> tuple[Timing, bytes]:
        return api_synthesize(client, server_cpu, name, voice, text)

    for round_index in range(rounds):
        log(f"[{name}] round {round_index + 1}/{rounds}: {len(TEXTS)} texts, raw and API interleaved")
        for i, text in enumerate(TEXTS):
            raw_first = (round_index + i) % 2 == 0  # raw, API, API, raw, ...: neither always goes second
            if raw_first:  # a tuple evaluates left to right
                (raw, audio, count), (api, wav) = run_raw(text), run_api(text)
            else:
                (api, wav), (raw, audio, count) = run_api(text), run_raw(text)
            result.raw_times[i].append(raw.wall)
            result.raw_cpu[i].append(raw.cpu)
            result.api_times[i].append(api.wall)
            result.api_cpu[i].append(api.cpu)
            if round_index == 0:
                result.sentences.append(count)
                result.raw_audio_s.append(len(audio) / result.sample_rate)
                info = sf.info(io.BytesIO(wav))
                result.api_audio_s.append(info.frames / info.samplerate)
    check_lengths(result, SENTENCE_GAP_S)

    log(f"[{name}] streaming, {rounds} rounds: raw generator and /v1/audio/speech (pcm) interleaved")
    for round_index in range(rounds):
        for path in ("raw", "api") if round_index % 2 == 0 else ("api", "raw"):
            if path == "raw":
                first, total = raw_stream(registry, name, voice, STREAM_TEXT)
                result.stream_raw_first.append(first)
                result.stream_raw_total.append(total)
            else:
                first, total, size = api_stream(client, name, voice, STREAM_TEXT)
                result.stream_api_first.append(first)
                result.stream_api_total.append(total)
                result.stream_api_audio_s = size / 2 / result.sample_rate  # 16-bit mono
    return result


# ---- report ----------------------------------------------------------------------------------------
def f2(value: float) -> str:
    return f"{value:.2f}"


def f3(value: float) -> str:
    return f"{value:.3f}"


def report(
    results: list[EngineResult], rounds: int, threads_note: str, load: tuple[float, float], idle_cpu: float
) -> None:
    print()
    print(f"Per text (median of {rounds} rounds; wall seconds, and CPU seconds of the synthesizing process):")
    rows = []
    for r in results:
        for i, text in enumerate(TEXTS):
            raw, api = median(r.raw_times[i]), median(r.api_times[i])
            raw_cpu, api_cpu = median(r.raw_cpu[i]), median(r.api_cpu[i])
            rows.append(
                [
                    r.name,
                    str(i + 1),
                    str(len(text)),
                    str(r.sentences[i]),
                    f2(r.raw_audio_s[i]),
                    f2(r.api_audio_s[i]),
                    f3(raw),
                    f3(api),
                    f3(api - raw),
                    f2(api / raw),
                    f3(raw_cpu),
                    f3(api_cpu),
                    f2(api_cpu / raw_cpu),
                ]
            )
    headers = ["engine", "text", "chars", "sent", "audio s", "API audio s", "raw s", "API s", "API-raw"]
    print(table([*headers, "API/raw", "raw CPU s", "API CPU s", "CPU API/raw"], rows))

    print()
    print(f"Summary ({len(TEXTS)} texts; sums of per-text medians over {rounds} rounds):")
    rows = [
        [
            r.name,
            r.voice,
            f2(r.audio_s),
            f2(sum(r.api_audio_s)),
            f3(r.raw_s),
            f3(r.api_s),
            f3(r.ratio),
            f3(r.raw_s / r.audio_s),
            f3(r.api_s / r.audio_s),
            f3(r.api_cpu_s / r.raw_cpu_s),
        ]
        for r in results
    ]
    headers = ["engine", "voice", "audio s", "API audio s", "raw s", "API s", "API/raw", "RTF raw", "RTF API"]
    print(table([*headers, "CPU API/raw"], rows))

    print()
    print(
        f"Streaming ({len(STREAM_TEXT)}-char 4-sentence text; API: /v1/audio/speech pcm; median of {rounds}):"
    )
    rows = [
        [
            r.name,
            f2(r.stream_api_audio_s),
            f3(median(r.stream_raw_first)),
            f3(median(r.stream_api_first)),
            f3(median(r.stream_api_first) - median(r.stream_raw_first)),
            f3(median(r.stream_raw_total)),
            f3(median(r.stream_api_total)),
            f2(median(r.stream_api_first) / median(r.stream_api_total)),
        ]
        for r in results
    ]
    headers = [
        "engine",
        "API audio s",
        "TTFA raw s",
        "TTFA API s",
        "TTFA API-raw",
        "total raw s",
        "total API s",
    ]
    print(table([*headers, "TTFA/total API"], rows))

    print()
    print("audio s: the raw engine's speech; API audio s: the API's audio (adds 0.18 s between sentences).")
    print(
        "RTF = wall seconds / raw speech seconds (same denominator for both, so RTF API / RTF raw = API/raw)."
    )
    print(
        "CPU API/raw: server-process CPU per request over bench-process CPU per raw run (less noise-prone)."
    )
    print(
        "TTFA: seconds to the first audio (raw: first chunk from the generator; API: first non-empty body chunk)."
    )
    print(threads_note)
    print(f"server idle CPU (no request in flight, {IDLE_PROBE_S:.0f} s probe): {idle_cpu:.1%} of one core")
    print(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    print()
    for r in results:
        verdict = "PASS" if r.ratio <= TARGET_RATIO else "FAIL"
        print(
            f"{r.name}: {verdict}: API/raw = {r.ratio:.3f} (target <= {TARGET_RATIO:.2f}), "
            f"{r.api_s - r.raw_s:+.3f} s over {len(TEXTS)} texts; CPU API/raw = {r.api_cpu_s / r.raw_cpu_s:.3f}"
        )
        for warning in r.warnings:
            print(f"  WARNING {r.name}: {warning}")


# ---- main ------------------------------------------------------------------------------------------
def main() -> None:
    args = engine_args(__doc__.split("\n\n")[0] if __doc__ else None, VOICES, 3)
    for key, value in SERVER_ENV.items():
        os.environ.setdefault(key, value)

    from engines.gpu import GpuAllocator
    from studio.config import Settings
    from studio.core import build_registry

    started = time.monotonic()
    load_start = os.getloadavg()[0]
    # The studio's default thread count, resolved once here and given to both processes.
    threads = Settings().onnx_threads or os.cpu_count() or 1
    threads_note = (
        f"onnxruntime threads, same in bench and server: kokoro intra_op={threads}, inter_op=1 "
        "(studio default: onnx_threads=0 -> one per core); piper: onnxruntime's defaults "
        "(SessionOptions(), intra_op=0 -> one per physical core). Raw and API never run at once."
    )
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        data_dir = Path(tmp)
        with Server(data_dir, data_dir / "server.log", {"STUDIO_ONNX_THREADS": str(threads)}) as server:
            log(f"starting the server on {server.url} (data dir {data_dir})")
            settings = Settings(data_dir=data_dir, onnx_threads=threads)
            registry = build_registry(settings, GpuAllocator())
            for name in args.engines:  # load while the server boots; untimed
                log(f"[{name}] loading the raw engine")
                registry.loaded(name)
            server.wait_ready()
            log(f"server ready ({time.monotonic() - started:.0f} s in)")
            with httpx.Client(base_url=server.url, timeout=300, trust_env=False) as client:
                results = [
                    bench_engine(registry, client, server.cpu_seconds, name, args.rounds)
                    for name in args.engines
                ]
            idle_cpu = idle_cpu_share(server)
    report(results, args.rounds, threads_note, (load_start, os.getloadavg()[0]), idle_cpu)
    print(f"\nbench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
