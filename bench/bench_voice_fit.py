"""Voice fitting benchmark: does a fitted Kokoro voice beat the best shipped voice on sentences it never heard?

For each of three references the studio does not ship, made fresh in this run (~10 s each, their
own sentences, none of the fitter's probe, grid or held-out sentences):

* (a) joe x1.22: Piper's joe played 1.22x faster (resampled as tests/test_voices.py does: higher
  pitch and formants);
* (b) joe x0.85: Piper's joe played 0.85x (slower, lower);
* (c) espeak en+f3: espeak-ng's `en+f3` voice (a different synthesizer altogether), through the
  libespeak-ng that the espeakng-loader package ships. A Kokoro blend is not used: it lies in the
  shipped space.

each clip goes through the studio's upload cleaning (`clean_reference`: 24 kHz, trimmed, levelled),
then, on three held-out sentences defined here (not voice_fit.HELD_OUT, not the probes):

1. every shipped pack is measured with `VoiceFitter.held_out` (speaker similarity to the reference
   with resemblyzer, and WER with the bundled Whisper); the best by similarity is the honest "best
   built-in" (it can differ from the pack the fitter itself calls nearest, which it picks from a
   precomputed embedding grid);
2. for each mode the fitter fits (`VoiceFitter.fit`, same seed) and the fitted style is measured the
   same way.

Targets (from the issue): fitted similarity > best built-in's; fitted WER within 5 points of the
built-in's; quick fit under ~30 s on 2 cores (fit seconds include the fitter's own held-out check).

Diagnostics: the engines are wrapped to count and time each synthesis, embedding and transcription,
so the search phase (between the fitter's "starting from" and "checking" progress reports) can be
broken down: trials, WER checks (candidates whose score improved), steps rejected by the WER check,
steps kept, seconds per trial and per call. The search stops at a trial count or at a wall-clock
cap (voice_fit.MODES, printed with the results), whichever comes first: on a busy machine it takes
longer or stops early at the cap, so the load average is printed too.

Thorough is ~5 minutes per reference by design; to keep the run under ~20 minutes it runs on (a)
and (c) by default (`--thorough-on a,b,c` for all three, ~4 minutes more). Run (about 16 minutes
on 2 idle cores with the defaults):

    PYTHONPATH=. .venv/bin/python bench/bench_voice_fit.py [--modes quick,thorough] [--seed 0]
        [--thorough-on a,c]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))

from bench.common import log, table  # noqa: E402

HELD_OUT = (  # fresh: none of voice_fit.PROBES / HELD_OUT / GRID_SENTENCE, nor the reference texts
    "My sister planted tomatoes and beans along the garden fence last spring.",
    "If the printer jams again, open the side panel and pull the paper out gently.",
    "Our flight was delayed by two hours, so we played cards at the gate.",
)
TEXT_A = (
    "The library opens at nine on weekdays and at ten on Saturdays. Children can borrow up to six "
    "books at a time. Please return them within three weeks, or ask at the desk for more time. "
    "Thank you."
)
TEXT_B = (
    "Last winter the lake froze so thick that people walked across it. My grandfather told stories "
    "about skating to school on the ice, years ago."
)
TEXT_C = (
    "Good evening, and thank you all for coming tonight. We have a lot to talk about, so let us begin "
    "with the budget. After that, the team will share their plans for next year."
)
QUICK_TARGET_S = 30.0
WER_SLACK = 0.05


# ---- counting wrappers ---------------------------------------------------------------------------------
@dataclass
class Meter:
    """Calls and wall seconds per kind of work (speak, embed, asr)."""

    calls: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, kind: str, seconds: float) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def snapshot(self) -> tuple[dict[str, int], dict[str, float]]:
        return dict(self.calls), dict(self.seconds)


def metered_components(meter: Meter, threads: int, asr_threads: int):  # type: ignore[no-untyped-def]
    """Kokoro, speaker encoder and transcriber subclasses that report each call to `meter`."""
    from engines.gpu import GpuAllocator
    from engines.kokoro_onnx import KokoroOnnxEngine
    from studio.services.asr import Transcriber, Transcript
    from studio.services.speaker import SpeakerEncoder

    def timed(kind: str, call: Callable[[], object]):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        try:
            return call()
        finally:
            meter.add(kind, time.monotonic() - started)

    class MeteredKokoro(KokoroOnnxEngine):
        def speak(
            self, text: str, style: np.ndarray, speed: float = 1.0, language: str = "en-us"
        ) -> np.ndarray:
            return timed("speak", lambda: super(MeteredKokoro, self).speak(text, style, speed, language))

    class MeteredEncoder(SpeakerEncoder):
        def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
            return timed("embed", lambda: super(MeteredEncoder, self).embed(audio, sample_rate))

    class MeteredTranscriber(Transcriber):
        def transcribe(self, audio: np.ndarray, sample_rate: int, language: str | None = None) -> Transcript:
            return timed(
                "asr", lambda: super(MeteredTranscriber, self).transcribe(audio, sample_rate, language)
            )

    kokoro = MeteredKokoro(ROOT / "weights", GpuAllocator([]), threads=threads)
    return kokoro, MeteredEncoder(), MeteredTranscriber(asr_threads)


# ---- references ----------------------------------------------------------------------------------------
@dataclass
class Reference:
    key: str
    name: str
    how: str
    audio: np.ndarray  # 24 kHz, cleaned as an upload is
    sample_rate: int
    f0: float = 0.0


def joe_played_at(factor: float, text: str) -> tuple[np.ndarray, int]:
    """Piper joe played `factor`x as fast (resampled, then read at the original rate), as in the tests."""
    from engines.gpu import GpuAllocator
    from engines.piper import PiperEngine
    from studio.audio import resample

    piper = PiperEngine(ROOT / "weights", GpuAllocator([]))
    audio = np.concatenate([chunk.audio for chunk in piper.synthesize(text, "joe")])
    return resample(audio, 22050, int(22050 / factor)), 22050


def espeak(text: str, voice: str = "en+f3") -> tuple[np.ndarray, int]:
    """espeak-ng speaking `text`, through its C API (synchronous mode: samples come to a callback)."""
    import ctypes

    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    on_samples = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int]
    lib.espeak_Synth.argtypes += [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    synchronous, position_character, dont_exit = 2, 1, 0x8000  # dont_exit: fail with -1, not exit()
    rate = lib.espeak_Initialize(synchronous, 0, espeakng_loader.get_data_path().encode(), dont_exit)
    if rate <= 0:
        raise RuntimeError(f"espeak-ng did not start (data at {espeakng_loader.get_data_path()})")
    parts: list[np.ndarray] = []

    @on_samples
    def collect(samples, count, _events):  # type: ignore[no-untyped-def]
        if count > 0:
            parts.append(np.ctypeslib.as_array(samples, shape=(count,)).astype(np.float32) / 32768)
        return 0  # go on

    try:
        lib.espeak_SetSynthCallback(collect)
        encoded = text.encode()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        if lib.espeak_Synth(encoded, len(encoded) + 1, 0, position_character, 0, 0, None, None) != 0:
            raise RuntimeError("espeak-ng failed to synthesize")
        lib.espeak_Synchronize()
    finally:
        lib.espeak_Terminate()  # the library must not keep `collect` once this returns
    if not parts:
        raise RuntimeError(f"espeak-ng made no audio for {text!r}")
    return np.concatenate(parts), rate


def as_upload(audio: np.ndarray, rate: int) -> np.ndarray:
    """The studio's upload path: wav bytes -> clean_reference (24 kHz, trimmed, levelled)."""
    from studio.services.voices import clean_reference

    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return clean_reference(buffer.getvalue(), "reference.wav", 50 * 2**20).audio


def build_references() -> list[Reference]:
    from studio.services.voices import RATE

    refs = []
    log("building reference (a): Piper joe x1.22")
    refs.append(
        Reference("a", "joe x1.22", "Piper joe, 1.22x faster", as_upload(*joe_played_at(1.22, TEXT_A)), RATE)
    )
    log("building reference (b): Piper joe x0.85")
    refs.append(
        Reference("b", "joe x0.85", "Piper joe, 0.85x slower", as_upload(*joe_played_at(0.85, TEXT_B)), RATE)
    )
    log("building reference (c): espeak-ng en+f3")
    refs.append(Reference("c", "espeak en+f3", "espeak-ng en+f3", as_upload(*espeak(TEXT_C)), RATE))
    return refs


# ---- measurements --------------------------------------------------------------------------------------
@dataclass
class Builtins:
    scores: dict[str, tuple[float, float]]  # pack -> (held-out similarity, WER)
    seconds: float

    @property
    def best(self) -> str:
        return max(self.scores, key=lambda pack: self.scores[pack][0])


@dataclass
class Search:
    """The fitter's search phase, from the counters (between its 'starting' and 'checking' reports)."""

    seconds: float = 0.0
    start_seconds: float = 0.0  # from fit() to the 'starting from' report (start voice + its evaluation)
    check_seconds: float = 0.0  # the fitter's own held-out check, after the search
    calls: dict[str, int] = field(default_factory=dict)
    call_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class FitRow:
    ref: Reference
    mode: str
    builtin: str
    builtin_sim: float
    builtin_wer: float
    sim: float
    wer: float
    fit_seconds: float
    trials: int
    kept: int
    probes: int
    start_voice: str
    fitter_baseline: str
    probe_start: float
    probe_end: float
    check: dict[str, float]
    search: Search

    @property
    def gain(self) -> float:
        return 100 * (self.sim - self.builtin_sim)

    @property
    def wer_change(self) -> float:
        return 100 * (self.wer - self.builtin_wer)

    @property
    def sim_ok(self) -> bool:
        return self.sim > self.builtin_sim

    @property
    def wer_ok(self) -> bool:
        return self.wer <= self.builtin_wer + WER_SLACK + 1e-9

    @property
    def time_ok(self) -> bool:
        return self.mode != "quick" or self.fit_seconds < QUICK_TARGET_S

    @property
    def wer_checks(self) -> int:
        return self.search.calls.get("asr", 0) // self.probes

    @property
    def wer_rejected(self) -> int:
        return self.wer_checks - self.kept


def measure_builtins(fitter, ref: Reference) -> Builtins:  # type: ignore[no-untyped-def]
    from engines.kokoro_onnx import PACKS

    started = time.monotonic()
    scores = {}
    for pack in PACKS:
        scores[pack] = fitter.held_out(fitter.kokoro.style(pack), ref.audio, ref.sample_rate, HELD_OUT)
        log(f"  [{ref.key}] built-in {pack}: similarity {scores[pack][0]:.3f}, WER {scores[pack][1]:.1%}")
    return Builtins(scores, time.monotonic() - started)


def run_fit(fitter, meter: Meter, ref: Reference, mode: str, seed: int, builtins: Builtins) -> FitRow:  # type: ignore[no-untyped-def]
    from studio.services.voice_fit import MODES

    marks: dict[str, tuple[float, dict[str, int], dict[str, float]]] = {}
    last_logged = [0.0]

    def progress(percent: float, step: str, curve: list[tuple[int, float]]) -> None:
        now = time.monotonic()
        if step.startswith("starting from") and "search" not in marks:
            marks["search"] = (now, *meter.snapshot())
        elif step.startswith("checking") and "check" not in marks:
            marks["check"] = (now, *meter.snapshot())
        if now - last_logged[0] >= 10 or not step.startswith("trial"):
            last_logged[0] = now
            log(f"  [{ref.key} {mode}] {percent:3.0f}% {step}")

    log(f"  [{ref.key} {mode}] fitting (seed {seed})")
    started = time.monotonic()
    result = fitter.fit(ref.audio, ref.sample_rate, mode, seed=seed, progress=progress)
    ended = time.monotonic()
    (s0, calls0, secs0), (s1, calls1, secs1) = marks["search"], marks["check"]
    search = Search(
        seconds=s1 - s0,
        start_seconds=s0 - started,
        check_seconds=ended - s1,
        calls={k: calls1.get(k, 0) - calls0.get(k, 0) for k in calls1},
        call_seconds={k: secs1.get(k, 0.0) - secs0.get(k, 0.0) for k in secs1},
    )
    log(f"  [{ref.key} {mode}] measuring the fitted voice on the bench's held-out sentences")
    sim, wer = fitter.held_out(result.style, ref.audio, ref.sample_rate, HELD_OUT)
    best = builtins.best
    row = FitRow(
        ref=ref,
        mode=mode,
        builtin=best,
        builtin_sim=builtins.scores[best][0],
        builtin_wer=builtins.scores[best][1],
        sim=sim,
        wer=wer,
        fit_seconds=result.seconds,
        trials=result.trials,
        kept=result.accepted,
        probes=MODES[mode].probes,
        start_voice=result.start_voice,
        fitter_baseline=result.baseline_voice,
        probe_start=result.curve[0][1],
        probe_end=result.similarity,
        check=result.check,
        search=search,
    )
    log(
        f"  [{ref.key} {mode}] fitted: similarity {sim:.3f} (best built-in {row.builtin_sim:.3f}), "
        f"WER {wer:.1%}, {row.fit_seconds:.1f} s, {row.trials} trials, {row.kept} kept"
    )
    return row


# ---- report --------------------------------------------------------------------------------------------
def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def per_call(search: Search, kind: str) -> str:
    calls = search.calls.get(kind, 0)
    return f"{search.call_seconds.get(kind, 0.0) / calls:.2f}" if calls else "-"


def report(
    refs: list[Reference],
    builtins: dict[str, Builtins],
    rows: list[FitRow],
    notes: list[str],
    threads: int,
    asr_threads: int,
    load: tuple[float, float],
) -> None:
    from engines.kokoro_onnx import PACKS

    print("References (cleaned as uploads; 24 kHz):")
    print(
        table(
            ["ref", "what", "seconds", "median F0 Hz"],
            [
                [f"({r.key}) {r.name}", r.how, f"{len(r.audio) / r.sample_rate:.1f}", f"{r.f0:.0f}"]
                for r in refs
            ],
        )
    )

    print()
    print(f"Shipped packs on the bench's {len(HELD_OUT)} held-out sentences (similarity / WER %):")
    print(
        table(
            ["ref", *PACKS, "best"],
            [
                [
                    f"({r.key}) {r.name}",
                    *(
                        f"{builtins[r.key].scores[p][0]:.3f} / {pct(builtins[r.key].scores[p][1])}"
                        for p in PACKS
                    ),
                    builtins[r.key].best,
                ]
                for r in refs
            ],
        )
    )

    print()
    print(f"Fitted vs best built-in, on the bench's {len(HELD_OUT)} held-out sentences (WER in %):")
    print(
        table(
            [
                "reference",
                "mode",
                "best built-in",
                "sim",
                "WER",
                "fitted sim",
                "WER",
                "gain (sim pts)",
                "WER change (pts)",
                "fit s",
                "trials",
                "kept",
                "verdict",
            ],
            [
                [
                    f"({r.ref.key}) {r.ref.name}",
                    r.mode,
                    r.builtin,
                    f"{r.builtin_sim:.3f}",
                    pct(r.builtin_wer),
                    f"{r.sim:.3f}",
                    pct(r.wer),
                    f"{r.gain:+.1f}",
                    f"{r.wer_change:+.1f}",
                    f"{r.fit_seconds:.1f}",
                    str(r.trials),
                    str(r.kept),
                    "PASS" if r.sim_ok and r.wer_ok and r.time_ok else "FAIL",
                ]
                for r in rows
            ],
        )
    )

    print()
    print("Search diagnostics (search phase only: between the fitter's start evaluation and its own check):")
    print(
        table(
            [
                "reference",
                "mode",
                "start blend",
                "fitter's nearest",
                "probe sim start>end",
                "WER checks",
                "rejected by WER",
                "start s",
                "search s",
                "s/trial",
                "speak s",
                "embed s",
                "ASR s",
                "own check s",
                "fitter's check: fitted / baseline sim, WER",
            ],
            [
                [
                    f"({r.ref.key}) {r.ref.name}",
                    r.mode,
                    r.start_voice,
                    r.fitter_baseline,
                    f"{r.probe_start:.3f}>{r.probe_end:.3f}",
                    str(r.wer_checks),
                    str(r.wer_rejected),
                    f"{r.search.start_seconds:.1f}",
                    f"{r.search.seconds:.1f}",
                    f"{r.search.seconds / max(r.trials, 1):.2f}",
                    per_call(r.search, "speak"),
                    per_call(r.search, "embed"),
                    per_call(r.search, "asr"),
                    f"{r.search.check_seconds:.1f}",
                    f"{r.check['similarity']:.3f} / {r.check['baseline_similarity']:.3f}, "
                    f"{pct(r.check['wer'])} / {pct(r.check['baseline_wer'])}",
                ]
                for r in rows
            ],
        )
    )
    print(
        "WER checks: candidates whose score beat the best so far (each re-synthesized and transcribed); "
        "kept = WER checks - rejected by WER. speak/embed/ASR s: seconds per call in the search."
    )

    print()
    for mode in dict.fromkeys(r.mode for r in rows):
        mine = [r for r in rows if r.mode == mode]
        gains = [r.gain for r in mine]
        wer_changes = [r.wer_change for r in mine]
        print(
            f"{mode}: mean gain {statistics.mean(gains):+.1f} sim points over {len(mine)} references "
            f"(min {min(gains):+.1f}, max {max(gains):+.1f}); mean WER change {statistics.mean(wer_changes):+.1f} "
            f"points; mean fit {statistics.mean(r.fit_seconds for r in mine):.1f} s"
        )

    print()
    print(
        f"Targets: fitted similarity > best built-in; fitted WER <= built-in WER + {100 * WER_SLACK:.0f} points; "
        f"quick fit < {QUICK_TARGET_S:.0f} s on 2 cores."
    )
    for r in rows:
        parts = [
            f"similarity {'PASS' if r.sim_ok else 'FAIL'} ({r.sim:.3f} vs {r.builtin_sim:.3f}, {r.gain:+.1f})",
            f"WER {'PASS' if r.wer_ok else 'FAIL'} ({pct(r.wer)} vs {pct(r.builtin_wer)}, {r.wer_change:+.1f})",
        ]
        if r.mode == "quick":
            parts.append(f"time {'PASS' if r.time_ok else 'FAIL'} ({r.fit_seconds:.1f} s)")
        print(f"({r.ref.key}) {r.ref.name}, {r.mode}: " + "; ".join(parts))
    print()
    print(
        f"threads (as the studio): kokoro onnxruntime intra_op={threads}, Whisper cpu_threads={asr_threads}; "
        f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores "
        "(load slows every evaluation: longer fits, or fewer trials where a time cap is hit)"
    )
    from studio.services.voice_fit import MODES

    for mode in dict.fromkeys(r.mode for r in rows):
        settings = MODES[mode]
        print(
            f"mode {mode}: {settings.probes} probe sentence(s), search stops at {settings.max_trials} trials "
            f"or {settings.seconds:.0f} s, initial step {settings.step}"
        )
    for note in notes:
        print(f"note: {note}")


# ---- main ----------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--modes", default="quick,thorough", help="comma-separated: quick,thorough (default both)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the fitter's random seed (default 0)")
    parser.add_argument(
        "--thorough-on",
        default="a,c",
        help="references thorough runs on (default a,c to stay under ~20 minutes; a,b,c for all)",
    )
    args = parser.parse_args()
    from studio.services.voice_fit import MODES

    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        parser.error(f"--modes takes names from {', '.join(MODES)}; got {', '.join(unknown) or 'none'}")
    args.thorough_on = {k.strip() for k in args.thorough_on.split(",") if k.strip()}
    if not args.thorough_on <= {"a", "b", "c"}:
        parser.error("--thorough-on takes reference keys from a,b,c")
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from studio.config import Settings
    from studio.services.voice_fit import VoiceFitter, median_f0

    started = time.monotonic()
    load_start = os.getloadavg()[0]
    settings = Settings()
    threads = settings.onnx_threads or os.cpu_count() or 1  # as the studio resolves them
    notes: list[str] = []
    meter = Meter()
    kokoro, encoder, transcriber = metered_components(meter, threads, settings.onnx_threads)
    fitter = VoiceFitter(kokoro, encoder, transcriber)

    refs = build_references()
    for ref in refs:
        ref.f0 = median_f0(ref.audio, ref.sample_rate)
    log("loading Kokoro, the speaker encoder and Whisper (untimed warm-up)")
    warm = kokoro.speak("Warming up.", kokoro.style("jf_alpha"))
    encoder.embed(warm, 24000)
    transcriber.transcribe(warm, 24000)
    fitter.grid()

    builtins: dict[str, Builtins] = {}
    rows: list[FitRow] = []
    for ref in refs:
        log(f"[{ref.key}] {ref.name}: {len(ref.audio) / ref.sample_rate:.1f} s, median F0 {ref.f0:.0f} Hz")
        builtins[ref.key] = measure_builtins(fitter, ref)
        for mode in args.modes:
            if mode == "thorough" and ref.key not in args.thorough_on:
                notes.append(
                    f"thorough not run on ({ref.key}) {ref.name} (--thorough-on {','.join(sorted(args.thorough_on))})"
                )
                continue
            rows.append(run_fit(fitter, meter, ref, mode, args.seed, builtins[ref.key]))
        log(f"[{ref.key}] done ({time.monotonic() - started:.0f} s in)")

    rows.sort(key=lambda r: (args.modes.index(r.mode), r.ref.key))
    report(refs, builtins, rows, notes, threads, settings.onnx_threads, (load_start, os.getloadavg()[0]))
    print(f"\nseed {args.seed}; bench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
