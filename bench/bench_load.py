"""Load benchmark: many API clients at once beside one long dialogue task, on a real server.

What it does, in one run (all traffic to a `python app.py` server it starts on 127.0.0.1):

1. Starts `python app.py --port <free port>` on a fresh data dir with three random API keys
   (STUDIO_API_KEYS="k1,k2,k3", no per-key limit or quota) and the per-client rate limit OFF
   (STUDIO_RATE_LIMIT_PER_MINUTE=0), so what is measured is the server under load, not its 429s.
   `--task-workers N` also sets STUDIO_TASK_WORKERS (left out: the studio's default, 1).
2. Idle baseline: one untimed warm-up per voice and path, then `--idle N` (default 10) short
   sentences (7 or 8 words) one at a time on POST /api/v1/tts/synthesize (wav) -> idle p50/p95.
3. Starts ONE long dialogue task (`--long-minutes`, default 4 minutes of audio, two speakers) with
   key k2 through POST /api/v1/dialogue (no wait), checks it is running, then times a few short
   sentences from a single client beside it (how much the long task alone slows a short request).
4. Load: `--clients N` (default 8) threads, each with its own httpx client and one of the keys
   (client i uses key i mod 3, `Authorization: Bearer`), loop for `--seconds` (default 300), picking
   each request by a fixed mix: short speech on /api/v1/tts/synthesize (75%), OpenAI
   /v1/audio/speech wav (20%), small 2-turn dialogue tasks with "wait": true (5%). Every text holds
   a unique token phrase (four easy English words and a spelled-out number) so each output can be
   checked; voices: jm_kumo (Kokoro, 2 in 3) and joe (Piper), as echo/onyx on the OpenAI route.
   Latency (send -> whole body), status and errors are recorded; the audio of every
   `--keep-every`-th response of each type (at most `--max-kept`) is kept, dialogue results are
   downloaded for the kept ones. Each client plays (sleeps for) the speech it got before its next
   request, as a person or a voice app would; `--no-listen` sends at once (a saturation test: on a
   one-synthesis-at-a-time model latency then grows with the client count whatever the scheduling). Beside the clients: a sampler (server RSS, CPU, threads every 2 s),
   a /health probe every 2 s, and a privacy checker that asks, with key k1, for the long task and
   for other keys' small dialogue tasks (GET, logs, download, cancel: each must be 404, and k1's task
   list must not show them), while k2 still sees its own.
5. Afterwards (server stopped): every kept audio is transcribed with the bundled Whisper base
   (studio.services.asr.Transcriber) and must match its own request text with WER <= 0.35 (digits
   in the transcript are spelled out first); a miss is a "mixed output", and the report says whether
   the transcript fits another request's text better (audio swapped or mixed) or none (garbled).
   The idle baseline's audio is checked the same way, as a control for the checker itself.
6. Prints throughput and p50/p95 per type, errors, mixed outputs, idle vs loaded p95 of short
   speech, server RSS after warm-up (at 20% of the run) and at the end, the long task's progress,
   diagnostics on where requests wait (server CPU use, per-engine latency, the single client beside
   the long task, /health under load, Little's law, dialogue queue waits), the machine's load
   average at start and end, and a PASS/FAIL line per target: 0 errors, 0 mixed outputs,
   loaded/idle p95 of short speech <= 3, RSS growth < 10%. Exit status 1 when a target fails.

Every request has a timeout (`--timeout`, default 120 s), every loop is bounded in count and time,
client threads are joined, and the server is stopped by its PID in `finally`.

Run (about `--seconds` + 3 minutes on 2 cores; progress goes to stderr):

    PYTHONPATH=. .venv/bin/python bench/bench_load.py [--clients 8] [--seconds 300]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import soundfile as sf
from num2words import num2words

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))

from bench.common import log, table  # noqa: E402
from bench.server import Server  # noqa: E402

MIX = (("speech", 0.75), ("openai", 0.20), ("dialogue", 0.05))
TYPES = tuple(name for name, _ in MIX)
# The voices the project's own tests trust for English words (tests/test_api_speech.py); the
# Japanese packs (jf_*) speak English less clearly, and Whisper mishears them into false "mixed
# outputs". Picked 2 Kokoro : 1 Piper (a voice listed twice is picked twice as often).
SPEECH_VOICES = ("jm_kumo", "joe", "jm_kumo")
ENGINE_OF = {"jm_kumo": "kokoro", "joe": "piper"}
OPENAI_VOICES = {"echo": "jm_kumo", "onyx": "joe"}  # the studio's mapping of these OpenAI names
OPENAI_PICKS = ("echo", "onyx", "echo")
DIALOGUE_VOICES = {"S1": "jm_kumo", "S2": "joe"}  # small tasks; the long one keeps the defaults
# Common two-syllable words that neither split ("jacket" -> "jack at") nor abbreviate ("doctor" -> "Dr.")
WORDS = (
    "apple", "river", "garden", "yellow", "music", "window", "summer", "orange", "pencil", "tiger",
    "morning", "water", "kitchen", "mountain", "ocean", "dinner", "winter", "coffee", "purple", "monkey",
    "forest", "island", "camera", "chicken",
)  # fmt: skip
TEMPLATES = ("Please say {phrase}.", "Now write {phrase}.", "Next comes {phrase}.")
WER_LIMIT = 0.35
RATIO_LIMIT = 3.0
RSS_GROWTH_LIMIT = 10.0  # percent
WARM_FRACTION = 0.2  # RSS "after warm-up" is read at this share of the load phase
SAMPLE_S = 2.0  # RSS / CPU sampling and /health probing period
PRIVACY_EVERY_S = 5.0
CHARS_PER_SECOND = 14.0  # sizing estimate for Kokoro's English speech
BESIDE_LONG = 5  # short requests from a single client beside the long task, before the load
MAX_REQUESTS_PER_CLIENT = 100_000  # a count bound on top of the time bound
LONG_SENTENCES = (
    "Did you manage to find a parking spot this morning?",
    "I had to circle the block three times before anything opened up.",
    "That is exactly why I started taking the bus to work.",
    "The bus is fine until it rains and everyone rides it at once.",
    "Anyway, have you read the report that came out on Friday?",
    "Only the summary, and it raised more questions than it answered.",
    "The numbers for the second quarter looked better than anyone expected.",
    "We should ask the finance team before the meeting on Thursday.",
    "The new place on the corner makes surprisingly good soup.",
    "Is that the one with the long line out the door?",
    "The forecast says sunshine all week, which would be a nice change.",
    "My garden could certainly use a few dry days.",
    "My sister is visiting next weekend with her two children.",
    "We are planning to take them to the science museum on Saturday.",
    "Let me check the opening hours before we go.",
    "Have you decided where to go on holiday this year?",
    "We are thinking about a quiet week by the sea.",
    "Just pack a warm jacket, because the evenings get cold.",
)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- texts and checking ----------------------------------------------------------------------------
class Phrases:
    """Unique token phrases ("tiger, window, apple, ocean, forty-two"), thread-safe, seeded.

    Four words and a number in a 7-8 word sentence: one misheard word (even heard as two) stays under
    the WER limit, while another request's sentence (5 or more words differ) is far over it."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            for _ in range(1000):  # 24 * 23 * 22 * 21 * 99 phrases: a free one is found long before this
                words = ", ".join(self._rng.sample(WORDS, 4))  # commas: a short pause after each word
                phrase = f"{words}, {num2words(self._rng.randint(1, 99))}"
                if phrase not in self._used:
                    self._used.add(phrase)
                    return phrase
        raise RuntimeError("ran out of unique phrases")

    def sentence(self) -> str:
        return self._rng.choice(TEMPLATES).format(phrase=self.new())


def spell_numbers(text: str) -> str:
    """Whisper often writes "42" for "forty-two": spell digits out before comparing words."""
    return re.sub(r"\d+", lambda m: f" {num2words(int(m.group()))} ", text.replace(",", ""))


def heard_wer(reference: str, transcript: str) -> float:
    from studio.services.asr import word_error_rate

    return word_error_rate(reference.replace("-", " "), spell_numbers(transcript).replace("-", " "))


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A whole wav, or a streamed one (unknown sizes in its header, 16-bit PCM after 'data')."""
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        return (audio if audio.ndim == 1 else audio.mean(axis=1)), rate
    except Exception:
        start = data.find(b"data")
        if data[:4] != b"RIFF" or start < 0:
            raise
        rate = int.from_bytes(data[24:28], "little")
        pcm = data[start + 8 :]
        pcm = pcm[: len(pcm) // 2 * 2]
        return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, rate


# ---- records ---------------------------------------------------------------------------------------
@dataclass
class Record:
    kind: str  # speech | openai | dialogue
    client: int
    key_index: int
    text: str
    voice: str
    start: float  # seconds since the load phase began (negative: before it)
    latency: float = float("nan")
    status: int = 0  # HTTP status; 0: no answer (exception)
    error: str = ""
    audio: bytes | None = None  # kept for checking
    task: dict[str, Any] | None = None  # dialogue: the finished task
    audio_seconds: float = 0.0  # length of the speech returned (what a listening client plays)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.error

    @property
    def engine(self) -> str:
        return ENGINE_OF.get(self.voice, "kokoro")


@dataclass
class Sample:
    t: float  # seconds since the load phase began
    rss: int
    cpu: float  # server CPU seconds so far
    threads: int


@dataclass
class Shared:
    """What the load threads report back (appends to lists are atomic under the GIL)."""

    records: list[Record] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    health_errors: list[str] = field(default_factory=list)
    privacy: list[tuple[str, bool, str]] = field(default_factory=list)  # (check, passed, detail)
    long_progress: list[tuple[float, float]] = field(default_factory=list)  # (t, percent)
    dialogue_tasks: list[tuple[int, str]] = field(default_factory=list)  # (key index, task id)
    counts: Counter[str] = field(default_factory=Counter)
    wall0: float = 0.0  # time.time() when the load began (for file mtimes)
    kept: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, kind: str, every: int, limit: int) -> bool:
        """Whether to keep this response's audio: every `every`-th of its type, `limit` in all."""
        with self.lock:
            self.counts[kind] += 1
            if (self.counts[kind] - 1) % every == 0 and self.kept < limit:
                self.kept += 1
                return True
            return False


# ---- requests --------------------------------------------------------------------------------------
def make_client(url: str, key: str, timeout: float) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        timeout=httpx.Timeout(timeout, connect=10.0),
        headers={"Authorization": f"Bearer {key}"},
        trust_env=False,
    )


def wav_seconds(data: bytes) -> float:
    """Length of a 16-bit mono WAV from its header (no decoding)."""
    rate = int.from_bytes(data[24:28], "little") if len(data) > 44 else 0
    return (len(data) - 44) / (2 * rate) if rate else 0.0


def post_speech(client: httpx.Client, record: Record, keep: bool, path: str, body: dict[str, Any]) -> None:
    """POST `body` to a route that answers with a WAV; its status, error or length (and audio) go to `record`."""
    response = client.post(path, json=body)
    record.status = response.status_code
    if not response.is_success:
        record.error = response.text[:200]
        return
    record.audio_seconds = wav_seconds(response.content)
    if keep:
        record.audio = response.content


def short_speech(client: httpx.Client, record: Record, keep: bool) -> None:
    body = {"text": record.text, "voice_id": record.voice, "format": "wav"}
    post_speech(client, record, keep, "/api/v1/tts/synthesize", body)


def openai_speech(client: httpx.Client, record: Record, keep: bool) -> None:
    body = {"model": "tts-1", "input": record.text, "voice": record.voice, "response_format": "wav"}
    post_speech(client, record, keep, "/v1/audio/speech", body)


def dialogue_script(phrases: Phrases) -> tuple[str, str]:
    """A 2-turn script with a token phrase per turn, and the words it should say."""
    first, second = phrases.new(), phrases.new()
    turns = (f"Hello, the first words are {first}.", f"Thank you, and mine are {second}.")
    return f"[S1] {turns[0]}\n[S2] {turns[1]}", " ".join(turns)


def small_dialogue(client: httpx.Client, record: Record, keep: bool, script: str) -> None:
    body = {"script": script, "voices": DIALOGUE_VOICES, "wait": True, "task_name": "load-small"}
    response = client.post("/api/v1/dialogue", json=body)
    record.status = response.status_code
    if not response.is_success:
        record.error = response.text[:200]
        return
    task = response.json()
    record.task = task
    if task.get("status") != "completed":
        record.error = f"task {task.get('status')}: {task.get('error_message', '')[:150]}"
        return
    if keep:
        download = client.get(f"/api/v1/task/{task['task_id']}/files/download/dialogue.wav")
        if download.is_success:
            record.audio = download.content
        else:
            record.error = f"download answered {download.status_code}"


def timed(record: Record, call: Any, *args: Any) -> Record:
    started = time.perf_counter()
    try:
        call(*args)
    except Exception as error:  # timeouts, refused connections: counted as errors, the loop goes on
        record.error = f"{type(error).__name__}: {error}"[:200]
    record.latency = time.perf_counter() - started
    return record


# ---- the load phase --------------------------------------------------------------------------------
@dataclass
class LoadConfig:
    url: str
    keys: list[str]
    clients: int
    seconds: float
    timeout: float
    keep_every: int
    max_kept: int
    seed: int
    long_task_id: str
    server_pid: int
    listen: bool = True  # each client plays what it got before its next request


def client_loop(index: int, cfg: LoadConfig, shared: Shared, phrases: Phrases, t0: float) -> None:
    rng = random.Random(cfg.seed * 1000 + index)
    key_index = index % len(cfg.keys)
    deadline = t0 + cfg.seconds
    with make_client(cfg.url, cfg.keys[key_index], cfg.timeout) as client:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= deadline:
                return
            kind = rng.choices(TYPES, weights=[w for _, w in MIX])[0]
            keep = shared.keep(kind, cfg.keep_every, cfg.max_kept)
            start = time.monotonic() - t0
            if kind == "speech":
                record = Record(kind, index, key_index, phrases.sentence(), rng.choice(SPEECH_VOICES), start)
                timed(record, short_speech, client, record, keep)
            elif kind == "openai":
                voice = rng.choice(OPENAI_PICKS)
                record = Record(kind, index, key_index, phrases.sentence(), voice, start)
                record.voice = OPENAI_VOICES[voice]  # the studio voice it maps to (for per-engine stats)
                timed(record, openai_speech, client, record, keep)
            else:
                script, words = dialogue_script(phrases)
                record = Record(kind, index, key_index, words, "jm_kumo", start)
                timed(record, small_dialogue, client, record, keep, script)
                if record.task:
                    shared.dialogue_tasks.append((key_index, record.task["task_id"]))
            shared.records.append(record)
            if record.error.startswith("ConnectError"):  # the server is gone: don't spin
                time.sleep(1.0)
            elif cfg.listen and record.ok:
                time.sleep(min(record.audio_seconds, max(0.0, deadline - time.monotonic())))


def sampler_loop(cfg: LoadConfig, shared: Shared, t0: float, stop: threading.Event) -> None:
    """Server RSS / CPU / threads every SAMPLE_S, and a /health probe (threadpool + event loop)."""
    process = psutil.Process(cfg.server_pid)
    with httpx.Client(base_url=cfg.url, timeout=30, trust_env=False) as client:
        for _ in range(int((cfg.seconds + cfg.timeout + 60) / SAMPLE_S) + 1):
            try:
                times = process.cpu_times()
                shared.samples.append(
                    Sample(
                        time.monotonic() - t0,
                        process.memory_info().rss,
                        times.user + times.system,
                        process.num_threads(),
                    )
                )
            except psutil.Error:
                return
            started = time.perf_counter()
            try:
                if client.get("/health").status_code == 200:
                    shared.health.append(time.perf_counter() - started)
                else:
                    shared.health_errors.append("non-200")
            except httpx.HTTPError as error:
                shared.health_errors.append(type(error).__name__)
            if stop.wait(max(0.0, SAMPLE_S - (time.perf_counter() - started))):
                return


def privacy_loop(cfg: LoadConfig, shared: Shared, t0: float, stop: threading.Event) -> None:
    """Key k1 must never see k2's long task or other keys' small tasks; k2 must see its own."""
    k1 = make_client(cfg.url, cfg.keys[0], 30)
    k2 = make_client(cfg.url, cfg.keys[1], 30)
    k3 = make_client(cfg.url, cfg.keys[2], 30)
    checked: set[str] = set()

    def expect_404(name: str, method: str, path: str) -> None:
        try:
            response = k1.request(method, path)
            shared.privacy.append(
                (name, response.status_code == 404, f"{method} {path}: {response.status_code}")
            )
        except httpx.HTTPError as error:
            shared.privacy.append((name, False, f"{method} {path}: {type(error).__name__}"))

    try:
        for _ in range(int(cfg.seconds / PRIVACY_EVERY_S) + 2):
            long_id = cfg.long_task_id
            expect_404("k1 reads k2's long task", "GET", f"/api/v1/task/{long_id}")
            expect_404("k1 reads its logs", "GET", f"/api/v1/task/{long_id}/logs")
            expect_404("k1 downloads from it", "GET", f"/api/v1/task/{long_id}/files/download/dialogue.srt")
            try:
                listed = k1.get("/api/v1/tasks").json().get("tasks", [])
                foreign = [t["task_id"] for t in listed if t["task_id"] == long_id]
                shared.privacy.append(("k1's task list hides it", not foreign, f"{len(listed)} tasks listed"))
                own = k2.get(f"/api/v1/task/{long_id}")
                shared.privacy.append(("k2 reads its own task", own.status_code == 200, str(own.status_code)))
                if own.status_code == 200:
                    shared.long_progress.append((time.monotonic() - t0, own.json()["progress"]))
            except (httpx.HTTPError, ValueError, KeyError) as error:
                shared.privacy.append(("task list / own task", False, type(error).__name__))
            found = list(shared.dialogue_tasks)  # finished ones; pending ones come from their owners' lists
            for key_index, owner in ((1, k2), (2, k3)):
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    listed = owner.get("/api/v1/tasks").json()["tasks"]
                    found += [(key_index, t["task_id"]) for t in listed if t["task_name"] == "load-small"]
            for key_index, task_id in [(k, t) for k, t in found if k != 0 and t not in checked][:6]:
                checked.add(task_id)
                expect_404(f"k1 reads k{key_index + 1}'s small task", "GET", f"/api/v1/task/{task_id}")
            if stop.wait(PRIVACY_EVERY_S):
                break
        # Last, once: cancelling someone else's task must be refused (and must not cancel it).
        expect_404("k1 cancels k2's long task", "POST", f"/api/v1/task/{cfg.long_task_id}/cancel")
    finally:
        k1.close()
        k2.close()
        k3.close()


def run_load(cfg: LoadConfig, phrases: Phrases) -> tuple[Shared, float]:
    shared = Shared()
    stop = threading.Event()
    t0 = time.monotonic()
    shared.wall0 = time.time()
    helpers = [
        threading.Thread(target=sampler_loop, args=(cfg, shared, t0, stop), name="sampler", daemon=True),
        threading.Thread(target=privacy_loop, args=(cfg, shared, t0, stop), name="privacy", daemon=True),
    ]
    clients = [
        threading.Thread(
            target=client_loop, args=(i, cfg, shared, phrases, t0), name=f"client-{i}", daemon=True
        )
        for i in range(cfg.clients)
    ]
    for thread in helpers + clients:
        thread.start()
    next_report = t0 + 15
    while any(thread.is_alive() for thread in clients):
        if time.monotonic() > t0 + cfg.seconds + cfg.timeout + 60:
            log("clients did not finish in time; going on without them")
            break
        time.sleep(0.5)
        if time.monotonic() >= next_report:
            next_report += 15
            done = Counter(r.kind for r in shared.records)
            bad = sum(not r.ok for r in shared.records)
            progress = f", long task {shared.long_progress[-1][1]:.0f}%" if shared.long_progress else ""
            log(
                f"  {time.monotonic() - t0:5.0f} s: {dict(done)} done, {bad} errors{progress}"
                + (
                    " (deadline passed: finishing requests in flight)"
                    if time.monotonic() > t0 + cfg.seconds
                    else ""
                )
            )
    elapsed = time.monotonic() - t0
    for thread in clients:
        thread.join(1.0)
    stop.set()
    for thread in helpers:
        thread.join(40.0)
    return shared, elapsed


# ---- phases before the load ------------------------------------------------------------------------
def sequential_speech(
    client: httpx.Client, phrases: Phrases, count: int, voices: tuple[str, ...], offset: float
) -> list[Record]:
    records = []
    for i in range(count):
        voice = voices[i % len(voices)]
        record = Record("speech", -1, 0, phrases.sentence(), voice, offset)
        timed(record, short_speech, client, record, True)
        records.append(record)
    return records


def long_script(minutes: float) -> str:
    rng = random.Random(7)
    target, lines, size, speaker = minutes * 60 * CHARS_PER_SECOND, [], 0, 1
    while size < target:
        turn = " ".join(rng.choice(LONG_SENTENCES) for _ in range(rng.randint(1, 3)))
        lines.append(f"[S{speaker}] {turn}")
        size += len(turn)
        speaker = 3 - speaker
    return "\n".join(lines)


def start_long_task(client: httpx.Client, minutes: float) -> dict[str, Any]:
    script = long_script(minutes)
    response = client.post("/api/v1/dialogue", json={"script": script, "task_name": "load-long"})
    if not response.is_success:
        raise RuntimeError(f"the long dialogue was refused: {response.status_code} {response.text[:300]}")
    task = response.json()
    for _ in range(120):  # up to 60 s to start
        task = client.get(f"/api/v1/task/{task['task_id']}").json()
        if task["status"] != "pending":
            break
        time.sleep(0.5)
    if task["status"] != "running":
        raise RuntimeError(f"the long dialogue is {task['status']}, not running: {task.get('error_message')}")
    task["script_chars"] = len(script)
    task["turns"] = script.count("\n") + 1
    return task


# ---- checking the audio ----------------------------------------------------------------------------
@dataclass
class Check:
    record: Record
    transcript: str
    wer: float
    best_other: tuple[float, str] | None = None  # (WER, text) of the best-fitting other request


def check_outputs(records: list[Record], all_texts: list[str]) -> list[Check]:
    from studio.services.asr import Transcriber

    transcriber = Transcriber()
    checks = []
    for i, record in enumerate(records, 1):
        if i % 25 == 0:
            log(f"  transcribed {i}/{len(records)}")
        assert record.audio is not None
        try:
            audio, rate = decode_wav(record.audio)
            transcript = transcriber.transcribe(audio, rate).text
        except Exception as error:
            transcript = f"<undecodable: {type(error).__name__}: {error}>"
        check = Check(record, transcript, heard_wer(record.text, transcript))
        if check.wer > WER_LIMIT:
            others = [(heard_wer(text, transcript), text) for text in all_texts if text != record.text]
            check.best_other = min(others) if others else None
        checks.append(check)
    return checks


# ---- report ----------------------------------------------------------------------------------------
def latency_row(name: str, records: list[Record], window: float | None = None) -> list[str]:
    ok = [r.latency for r in records if r.ok]
    bad = len(records) - len(ok)
    rate = (
        f"{sum(1 for r in records if r.ok and r.start + r.latency <= window) / window:.3f}" if window else "-"
    )
    return [
        name,
        str(len(records)),
        str(bad),
        rate,
        f"{percentile(ok, 50):.3f}",
        f"{percentile(ok, 95):.3f}",
        f"{max(ok):.3f}" if ok else "nan",
    ]


LAT_HEADERS = ["requests", "n", "errors", "req/s", "p50 s", "p95 s", "max s"]


@dataclass
class Run:
    args: argparse.Namespace
    idle: list[Record]
    beside: list[Record]
    warm: dict[str, float]
    long_task: dict[str, Any]
    long_alone: tuple[float, float]  # (seconds, progress points) of the long task alone
    long_end: dict[str, Any] | None
    shared: Shared
    elapsed: float
    checks: list[Check]
    idle_checks: list[Check]
    leftover: dict[str, Counter[str]]  # key -> task statuses of small dialogue tasks at the end
    load: tuple[float, float]
    cpu_busy: tuple[float, float]  # machine-wide CPU percent: before the load, during it


def report(run: Run) -> bool:
    args, shared = run.args, run.shared
    records = shared.records
    by_kind = {kind: [r for r in records if r.kind == kind] for kind in TYPES}
    print()
    print(
        f"Load: {args.clients} clients for {args.seconds:.0f} s (all done after {run.elapsed:.0f} s), "
        f"mix {', '.join(f'{k} {w:.0%}' for k, w in MIX)}; 3 API keys, rate limit off "
        f"(STUDIO_RATE_LIMIT_PER_MINUTE=0), task workers: "
        f"{args.task_workers if args.task_workers is not None else 'server default (1)'}; timeout {args.timeout:.0f} s; "
        + (
            "clients send at once (saturation)."
            if args.no_listen
            else "each client plays the audio it got before its next request."
        )
    )
    print(
        f"Long dialogue beside it: task {run.long_task['task_id'][:8]}, {run.long_task['turns']} turns, "
        f"{run.long_task['script_chars']} chars (~{args.long_minutes:g} min of audio), owner k2."
    )
    print()
    print(
        "Latency (send -> whole body; p50/p95/max over successful requests; req/s: successes in the window):"
    )
    rows = [latency_row("idle: speech, one at a time", run.idle)]
    rows.append(latency_row("beside the long task, 1 client", run.beside))
    rows += [latency_row(f"load: {kind}", by_kind[kind], args.seconds) for kind in TYPES]
    rows.append(latency_row("load: all", records, args.seconds))
    print(table(LAT_HEADERS, rows))

    print()
    print("Short speech (/api/v1/tts/synthesize) by engine (the long dialogue uses Kokoro):")
    rows = []
    for engine in ("kokoro", "piper"):
        rows.append(latency_row(f"idle {engine}", [r for r in run.idle if r.engine == engine]))
        rows.append(latency_row(f"beside long task {engine}", [r for r in run.beside if r.engine == engine]))
        loaded = [r for r in by_kind["speech"] + by_kind["openai"] if r.engine == engine]
        rows.append(latency_row(f"load {engine} (speech+openai)", loaded, args.seconds))
    print(table(LAT_HEADERS, rows))

    errors = [r for r in records if not r.ok]
    print()
    print(f"Errors: {len(errors)} of {len(records)} requests")
    for (kind, status, error), n in Counter(
        (r.kind, r.status, re.sub(r"[0-9a-f]{32}", "<id>", r.error)[:120]) for r in errors
    ).most_common(8):
        print(f"  {n} x {kind}: status {status or 'none'}: {error}")

    print()
    mixed = [c for c in run.checks if c.wer > WER_LIMIT]
    swapped = [c for c in mixed if c.best_other and c.best_other[0] < c.wer]
    kept_kinds = Counter(c.record.kind for c in run.checks)
    print(
        f"Output check (Whisper base, WER <= {WER_LIMIT}): {len(run.checks)} kept outputs "
        f"({', '.join(f'{k} {n}' for k, n in kept_kinds.items())}), mean WER "
        f"{np.mean([c.wer for c in run.checks]) if run.checks else float('nan'):.3f}; "
        f"mixed outputs: {len(mixed)} ({len(swapped)} fit another request's text better: swapped "
        f"or mixed audio; {len(mixed) - len(swapped)} fit none: misheard)"
    )
    for c in mixed[:10]:
        other = c.best_other
        verdict = (
            f"fits another request better (WER {other[0]:.2f}: {other[1]!r})"
            if other and other[0] < c.wer
            else "fits no other request (garbled, not swapped)"
        )
        print(f"  {c.record.kind} {c.record.voice}: asked {c.record.text!r}, heard {c.transcript!r}")
        print(f"    WER {c.wer:.2f}; {verdict}")
    idle_bad = [c for c in run.idle_checks if c.wer > WER_LIMIT]
    print(
        f"Control, idle outputs: {len(run.idle_checks)} checked, mean WER "
        f"{np.mean([c.wer for c in run.idle_checks]) if run.idle_checks else float('nan'):.3f}, "
        f"{len(idle_bad)} over the limit"
    )
    for c in idle_bad[:3]:
        print(f"  idle {c.record.voice}: asked {c.record.text!r}, heard {c.transcript!r} (WER {c.wer:.2f})")

    passed = [p for p in shared.privacy if p[1]]
    failed = [p for p in shared.privacy if not p[1]]
    print()
    print(f"Privacy under load: {len(passed)} of {len(shared.privacy)} checks passed")
    for name, n in Counter(name for name, _, _ in shared.privacy).items():
        print(f"  {name}: {n} x")
    for name, _, detail in failed[:8]:
        print(f"  FAILED {name}: {detail}")

    samples = shared.samples
    warm = next((s for s in samples if s.t >= WARM_FRACTION * args.seconds), samples[-1] if samples else None)
    end = max((s for s in samples if s.t <= args.seconds + 1), key=lambda s: s.t, default=None)
    growth = (end.rss - warm.rss) / warm.rss * 100 if warm and end else float("nan")
    print()
    if warm and end:
        peak = max(s.rss for s in samples)
        print(
            f"Server RSS: {samples[0].rss / 2**20:.0f} MB at the start of the load, {warm.rss / 2**20:.0f} MB "
            f"after warm-up ({warm.t:.0f} s), {end.rss / 2**20:.0f} MB at the end ({end.t:.0f} s), "
            f"peak {peak / 2**20:.0f} MB; growth warm-up -> end {growth:+.1f}%"
        )

    long_end = run.long_end or {}
    print(
        f"Long dialogue at the end: {long_end.get('status', '?')}, {long_end.get('progress', float('nan')):.1f}%, "
        f"step {long_end.get('current_step', '?')!r}"
    )
    times = run.long_task.get("turn_times", [])
    during = [t for t in times if 0 <= t <= args.seconds]
    edges = [0.0, *during, args.seconds]
    print(
        f"Long dialogue turns finished: {sum(t < 0 for t in times)} before the load, {len(during)} during "
        f"it, {len(times)} of {run.long_task['turns']} in all; longest stretch of the load without a "
        f"finished turn: {max(b - a for a, b in itertools.pairwise(edges)):.0f} s"
    )

    # ---- diagnostics: where do requests wait? -----------------------------------------------------
    print()
    print("Where requests wait:")
    window = [s for s in samples if s.t <= args.seconds + 1]
    if len(window) >= 2:
        span = window[-1].t - window[0].t
        share = (window[-1].cpu - window[0].cpu) / span if span > 0 else float("nan")
        cores = os.cpu_count() or 1
        print(
            f"  server CPU during the load: {share:.2f} cores of {cores} ({share / cores:.0%}); machine-wide "
            f"CPU busy {run.cpu_busy[0]:.0f}% before the load, {run.cpu_busy[1]:.0f}% during it; server threads "
            f"max {max(s.threads for s in window)}"
        )
    ok = [r for r in records if r.ok and r.start + r.latency <= args.seconds]
    if ok:
        throughput = len(ok) / args.seconds
        mean_latency = float(np.mean([r.latency for r in records if r.ok]))
        print(
            f"  Little's law: {args.clients} clients / {throughput:.3f} req/s = {args.clients / throughput:.2f} s "
            f"expected latency if every client is always waiting; measured mean {mean_latency:.2f} s"
        )
    for engine in ("kokoro", "piper"):
        idle_engine = [r.latency for r in run.idle if r.ok and r.engine == engine]
        loaded = [r for r in by_kind["speech"] + by_kind["openai"] if r.ok and r.engine == engine]
        in_window = [r for r in loaded if r.start + r.latency <= args.seconds]
        if idle_engine and loaded:
            rate = len(in_window) / args.seconds
            busy = rate * float(np.mean(idle_engine))
            waiting = rate * float(np.mean([r.latency for r in loaded]))
            print(
                f"  {engine}: {rate:.3f} req/s x {np.mean(idle_engine):.2f} s idle service time = {busy:.2f} of "
                f"the engine's time (one synthesis at a time per model){' + the long task' if engine == 'kokoro' else ''}; "
                f"{waiting:.1f} of {args.clients} clients waiting on it on average (Little's law)"
            )
    idle_ok = [r.latency for r in run.idle if r.ok]
    if idle_ok:
        print(
            f"  idle service time: mean {np.mean(idle_ok):.3f} s per short request -> at most "
            f"{1 / np.mean(idle_ok):.2f} req/s if synthesis is strictly one at a time"
        )
    speech_ok = [r.latency for r in by_kind["speech"] if r.ok]
    beside_ok = [r.latency for r in run.beside if r.ok]
    if idle_ok and beside_ok and speech_ok:
        print(
            f"  p50 short speech: idle {percentile(idle_ok, 50):.3f} s -> beside the long task alone "
            f"{percentile(beside_ok, 50):.3f} s ({percentile(beside_ok, 50) / percentile(idle_ok, 50):.1f}x) -> "
            f"with {args.clients} clients {percentile(speech_ok, 50):.3f} s "
            f"({percentile(speech_ok, 50) / percentile(idle_ok, 50):.1f}x)"
        )
    if shared.health:
        print(
            f"  /health (a sync route: threadpool + event loop) under load: p50 {percentile(shared.health, 50):.3f} s, "
            f"p95 {percentile(shared.health, 95):.3f} s, max {max(shared.health):.3f} s, "
            f"{len(shared.health_errors)} failed"
        )
    alone_s, alone_pts = run.long_alone
    if shared.long_progress and alone_s > 0:
        first, last = shared.long_progress[0], shared.long_progress[-1]
        loaded_rate = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else float("nan")
        print(f"  long task progress: {alone_pts / alone_s:.3f} %/s alone, {loaded_rate:.3f} %/s under load")
    waits = [
        (r.task["started_at"] - r.task["created_at"], r.task["finished_at"] - r.task["started_at"])
        for r in by_kind["dialogue"]
        if r.task and r.task.get("started_at") and r.task.get("finished_at")
    ]
    if waits:
        print(
            f"  small dialogue tasks: queued {np.mean([w for w, _ in waits]):.1f} s on average before a "
            f"worker took them, then ran {np.mean([r for _, r in waits]):.1f} s"
        )
    for key, statuses in run.leftover.items():
        if statuses:
            print(f"  small dialogue tasks of {key} at the end: {dict(statuses)}")
    print(
        f"  load average (1 min) at start / end: {run.load[0]:.2f} / {run.load[1]:.2f} on {os.cpu_count()} cores"
    )

    # ---- verdicts ---------------------------------------------------------------------------------
    idle_p95 = percentile(idle_ok, 95)
    loaded_p95 = percentile(speech_ok, 95)
    ratio = loaded_p95 / idle_p95 if idle_ok and speech_ok else float("nan")
    verdicts = [
        (len(errors) == 0, f"errors: {len(errors)} (non-2xx or no answer; target 0)"),
        (
            len(mixed) == 0,
            f"mixed outputs: {len(mixed)} of {len(run.checks)} checked with WER > {WER_LIMIT} "
            f"({len(swapped)} fit another request better) (target 0)",
        ),
        (
            ratio <= RATIO_LIMIT,
            f"short speech p95 loaded/idle: {loaded_p95:.3f} s / {idle_p95:.3f} s = {ratio:.2f}x "
            f"(target <= {RATIO_LIMIT:.0f}x, long dialogue running)",
        ),
        (
            growth < RSS_GROWTH_LIMIT,
            f"server RSS growth after warm-up: {growth:+.1f}% (target < {RSS_GROWTH_LIMIT:.0f}%)",
        ),
        (
            not failed and bool(shared.privacy),
            f"privacy: {len(failed)} failed of {len(shared.privacy)} (target 0)",
        ),
    ]
    print()
    for ok_, line in verdicts:
        print(f"{'PASS' if ok_ else 'FAIL'}: {line}")
    return all(ok_ for ok_, _ in verdicts)


# ---- main ------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=300, help="length of the load phase (default 300)")
    parser.add_argument("--idle", type=int, default=10, help="idle baseline requests (default 10)")
    parser.add_argument("--long-minutes", type=float, default=4, help="audio length of the long dialogue")
    parser.add_argument("--timeout", type=float, default=120, help="per-request timeout, s (default 120)")
    parser.add_argument("--keep-every", type=int, default=5, help="keep every N-th output per type")
    parser.add_argument("--max-kept", type=int, default=150, help="outputs checked with Whisper at most")
    parser.add_argument("--task-workers", type=int, default=None, help="STUDIO_TASK_WORKERS (default: unset)")
    parser.add_argument("--seed", type=int, default=1, help="seed for texts and the request mix")
    parser.add_argument(
        "--no-listen",
        action="store_true",
        help="clients send their next request at once instead of first playing the audio they got "
        "(a saturation test: latency then grows with the client count on a one-at-a-time model)",
    )
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.idle < 2 or args.keep_every < 1 or args.timeout <= 0:
        parser.error("--clients >= 1, --seconds > 0, --idle >= 2, --keep-every >= 1, --timeout > 0")
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    log(f"load average at start: {os.getloadavg()}")
    keys = [secrets.token_hex(16) for _ in range(3)]
    phrases = Phrases(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        env = {"STUDIO_API_KEYS": ",".join(keys)}  # no ":PER_MINUTE:DAILY": no per-key limit, no quota
        if args.task_workers is not None:
            env["STUDIO_TASK_WORKERS"] = str(args.task_workers)
        with Server(Path(tmp) / "data", Path(tmp) / "server.log", env) as server:
            log(f"starting the server on {server.url} (data dir {tmp}/data)")
            server.wait_ready()
            log(f"server ready ({time.monotonic() - started:.0f} s in)")
            k1, k2 = (
                make_client(server.url, keys[0], args.timeout),
                make_client(server.url, keys[1], args.timeout),
            )
            with k1, k2:
                log("warming up: one request per voice and path (untimed)")
                warm: dict[str, float] = {}
                for voice in dict.fromkeys(SPEECH_VOICES):
                    record = Record("speech", -1, 0, phrases.sentence(), voice, -1)
                    warm[voice] = timed(record, short_speech, k1, record, False).latency
                    if not record.ok:
                        raise RuntimeError(f"warm-up failed: {record.status} {record.error}")
                for kind, call, extra in (
                    ("openai", openai_speech, ()),
                    ("dialogue", small_dialogue, (dialogue_script(phrases)[0],)),
                ):
                    record = Record(kind, -1, 0, phrases.sentence(), "echo", -1)
                    warm[kind] = timed(record, call, k1, record, False, *extra).latency
                    if not record.ok:
                        raise RuntimeError(f"warm-up {kind} failed: {record.status} {record.error}")
                log(f"  {', '.join(f'{k} {v:.2f} s' for k, v in warm.items())}")
                log(f"idle baseline: {args.idle} short requests, one at a time")
                idle = sequential_speech(k1, phrases, args.idle, SPEECH_VOICES, -1)
                busy_before = psutil.cpu_percent(interval=2.0)

                log(f"starting the long dialogue (~{args.long_minutes:g} min of audio) with key k2")
                long_task = start_long_task(k2, args.long_minutes)
                first = k2.get(f"/api/v1/task/{long_task['task_id']}").json()["progress"]
                alone_start = time.monotonic()
                beside = sequential_speech(k1, phrases, BESIDE_LONG, ("jm_kumo", "joe"), -1)
                time.sleep(max(0.0, 8.0 - (time.monotonic() - alone_start)))
                alone = k2.get(f"/api/v1/task/{long_task['task_id']}").json()
                long_alone = (time.monotonic() - alone_start, alone["progress"] - first)
                if alone["status"] != "running":
                    raise RuntimeError(f"the long dialogue is {alone['status']} before the load began")
                log(f"  running: {alone['progress']:.1f}% ({alone['current_step']})")

                log(f"load: {args.clients} clients for {args.seconds:.0f} s")
                cfg = LoadConfig(
                    server.url,
                    keys,
                    args.clients,
                    args.seconds,
                    args.timeout,
                    args.keep_every,
                    args.max_kept,
                    args.seed,
                    long_task["task_id"],
                    server.pid,
                    listen=not args.no_listen,
                )
                psutil.cpu_percent(interval=None)
                shared, elapsed = run_load(cfg, phrases)
                busy_during = psutil.cpu_percent(interval=None)
                load_end = os.getloadavg()[0]
                log(f"load average at the end of the load phase: {os.getloadavg()}")
                long_end: dict[str, Any] | None = None
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    long_end = k2.get(f"/api/v1/task/{long_task['task_id']}").json()
                turns_dir = Path(tmp) / "data" / "tasks" / long_task["task_id"] / "_turns"
                long_task["turn_times"] = sorted(  # when each finished turn was written, load-relative
                    path.stat().st_mtime - shared.wall0 for path in turns_dir.glob("*.json")
                )
                leftover: dict[str, Counter[str]] = {}
                for i, key in enumerate(keys):
                    with make_client(server.url, key, 30) as client:
                        try:
                            tasks = client.get("/api/v1/tasks").json()["tasks"]
                        except (httpx.HTTPError, ValueError, KeyError):
                            continue
                        leftover[f"k{i + 1}"] = Counter(
                            t["status"] for t in tasks if t["task_name"] == "load-small"
                        )
        log("server stopped")

    kept = [r for r in shared.records if r.audio is not None]
    log(f"checking {len(kept)} kept outputs and {len(idle)} idle ones with Whisper")
    all_texts = [r.text for r in shared.records]
    idle_checks = check_outputs([r for r in idle if r.audio is not None], all_texts)
    checks = check_outputs(kept, all_texts)
    run = Run(
        args,
        idle,
        beside,
        warm,
        long_task,
        long_alone,
        long_end,
        shared,
        elapsed,
        checks,
        idle_checks,
        leftover,
        (load_start, load_end),
        (busy_before, busy_during),
    )
    passed = report(run)
    print(
        f"\n{'ALL TARGETS PASS' if passed else 'SOME TARGETS FAIL'}; bench took {time.monotonic() - started:.0f} s"
    )
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
