"""Dialogue service: a multi-speaker script -> one mixed track, subtitles, timing and stems.

Each turn is synthesized with its speaker's voice (any engine; mixed engines are resampled to one
rate) and kept on disk as soon as it is made, so a long script runs as a resumable task whose
memory does not grow with its length: the mix, the per-speaker stems and the per-turn stems are
written by streaming the turn files, after one pass that measures each speaker's loudness.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import imageio_ffmpeg
import numpy as np
import soundfile as sf
from pydantic import Field, StringConstraints

from engines.base import AudioChunk, Capability, EngineUnavailable, ScriptSpeaker, SynthesisOptions
from engines.text import detect_language, split_sentences
from studio import audio as audio_io
from studio.errors import BadInput, TooLarge, Unavailable
from studio.services.quality import QualityGate, SentenceCheck, retake_options, summary
from studio.services.script import Script, Turn, normalize_text, parse_script
from studio.services.speech import SENTENCE_GAP_S, SHORT_TASK_CHARS, SpeechRequest, SpeechService
from studio.space import gpu_duration, on_zero_gpu
from studio.subtitles import Cue, to_srt, to_vtt
from studio.tasks.configs import LANGUAGE_HELP, LanguageName, TaskConfig, text_to_speak
from studio.tasks.runner import TaskContext, TaskKind

MIX_RATE = 24000
# Distinct by default: two speakers never share a timbre by accident.
DEFAULT_VOICES = {"S1": "jm_kumo", "S2": "jf_alpha", "S3": "joe", "S4": "jf_tebukuro", "S5": "jf_nezumi"}
DEFAULT_PAUSE_MS = 350  # silence between turns, unless a turn says otherwise
TARGET_RMS = 0.08  # about -22 dBFS of speech, the same for every speaker
FADE_S = 0.005  # short fades at every join: no clicks
OUTPUT_FORMATS = ("wav", "mp3", "flac")


class TurnOverride(TaskConfig):
    """One turn's own speed, pause before it, or language."""

    speed: float | None = Field(None, ge=0.25, le=4.0)
    pause_ms: int | None = Field(None, ge=0, le=10_000)
    language: LanguageName | None = Field(None, description="this turn's language: " + LANGUAGE_HELP)


TurnIndex = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,6}$")]  # JSON keys are strings


class DialogueConfig(TaskConfig):
    """A "dialogue" task: a script spoken turn by turn with each speaker's voice, mixed into one
    track with subtitles, timing and stems. Stored planned: `voices` names every speaker's voice."""

    script: str = Field(
        description="[S1]/(s1)/Speaker 1:/Name: turns; untagged lines alternate S1, S2",
        json_schema_extra=text_to_speak("max_dialogue_chars"),
    )
    voices: dict[str, str] = Field(default_factory=dict, description='speaker ("S1" or its name) -> voice id')
    format: Literal["wav", "mp3", "flac"] = "wav"
    # Between turns; sentences within a turn get the speech service's shorter gap.
    pause_ms: int = Field(DEFAULT_PAUSE_MS, ge=0, le=10_000, description="silence between turns")
    speed: float = Field(1.0, ge=0.25, le=4.0)
    normalize: bool = Field(False, description="spell out numbers and abbreviations before synthesis")
    overrides: dict[TurnIndex, TurnOverride] = Field(
        default_factory=dict, description="turn index (0-based, as a string) -> speed/pause/language"
    )
    language: LanguageName | None = Field(None, description=LANGUAGE_HELP)
    languages: dict[str, LanguageName] = Field(
        default_factory=dict, description='speaker ("S1" or its name) -> language, over `language`'
    )
    engine: str | None = Field(
        None,
        description="a dialogue engine that can run here (moss-ttsd, with its weights) speaks the whole "
        "script in one pass; default: each voice's own engine, turn by turn",
        json_schema_extra={"x-choices": "dialogue_engines"},
    )
    quality_check: bool = Field(
        False,
        description="hear every sentence back (ASR) and make a bad one again; report in quality.json "
        "(turn by turn only, not with a one-pass engine)",
    )

    def override(self, index: int) -> TurnOverride:
        return self.overrides.get(str(index)) or TurnOverride()


@dataclass(frozen=True)
class PlannedTurn:
    index: int
    turn: Turn
    voice: str
    engine: str
    speed: float
    pause_s: float  # silence before this turn (0 for the first)
    language: str | None = None  # studio code; None: each sentence's own


class DialogueService:
    def __init__(
        self,
        speech: SpeechService,
        max_chars: int = 0,
        max_turns: int = 0,
        references: Callable[[str, str | None], tuple[Path, str]] | None = None,
    ) -> None:
        self.speech = speech
        # A voice's reference clip and transcript, for one-pass engines that clone (MOSS-TTSD).
        self.references = references
        self.max_chars = max_chars or speech.max_text_chars * 10  # a script's length
        self.max_turns = max_turns  # 0: no limit

    # ---- planning: everything that can be wrong is found before any audio is made ----------
    def plan(self, request: DialogueConfig) -> tuple[Script, list[PlannedTurn]]:
        if request.format not in OUTPUT_FORMATS:
            raise BadInput(f"format must be one of {', '.join(OUTPUT_FORMATS)}", "bad_format")
        if not 0 <= request.pause_ms <= 10_000:
            raise BadInput("pause_ms must be between 0 and 10000", "bad_pause")
        if len(request.script) > self.max_chars:
            raise TooLarge(
                f"script is {len(request.script)} characters; the limit is {self.max_chars}",
                "script_too_long",
            )
        script = parse_script(request.script)
        if self.max_turns and len(script.turns) > self.max_turns:
            raise TooLarge(
                f"script has {len(script.turns)} turns; the limit is {self.max_turns}", "too_many_turns"
            )
        if request.engine:
            return script, self._plan_whole_script(script, request)
        languages = self._turn_languages(script, request)
        spoken: list[list[str]] = []  # each turn's languages
        for turn, language in zip(script.turns, languages, strict=True):
            with _on_line(turn):
                spoken.append(self.speech.languages_needed(turn.text, language))
        needed: dict[str, set[str]] = {}  # speaker -> the languages its turns are spoken in
        for turn, turn_languages in zip(script.turns, spoken, strict=True):
            needed.setdefault(turn.speaker, set()).update(turn_languages)
        voices = self.voices_for(script, request.voices, needed)
        planned = []
        for index, (turn, language) in enumerate(zip(script.turns, languages, strict=True)):
            override = request.override(index)
            engine, voice = self.speech.resolve(voices[turn.speaker])
            with _on_line(turn):
                self.speech.check_languages(engine, voice, turn.text, language)
            pause = override.pause_ms if override.pause_ms is not None else request.pause_ms
            planned.append(
                PlannedTurn(
                    index,
                    turn,
                    voice,
                    engine,
                    override.speed or request.speed,
                    pause / 1000 if index else 0.0,
                    language,
                )
            )
        return script, planned

    def _turn_languages(self, script: Script, request: DialogueConfig) -> list[str | None]:
        """Each turn's language: its override, else its speaker's, else the script's (None: auto)."""
        by_speaker = {}
        for speaker in script.speakers:
            chosen = request.languages.get(speaker.id) or request.languages.get(speaker.label)
            by_speaker[speaker.id] = self.speech.language(chosen) or self.speech.language(request.language)
        unknown = sorted(
            set(request.languages) - {s.id for s in script.speakers} - {s.label for s in script.speakers}
        )
        if unknown:
            raise BadInput(
                f"languages given for speakers not in the script: {', '.join(unknown)}", "unknown_speaker"
            )
        return [
            self.speech.language(request.override(i).language) or by_speaker[turn.speaker]
            for i, turn in enumerate(script.turns)
        ]

    def _plan_whole_script(self, script: Script, request: DialogueConfig) -> list[PlannedTurn]:
        """One pass through `request.engine`: every speaker still gets a voice, whose reference clip
        the engine clones."""
        engine_name = request.engine
        assert engine_name
        try:
            engine = self.speech.registry.capable(ScriptSpeaker, engine_name)
        except KeyError as error:
            raise BadInput(
                f"{error.args[0]}; or leave engine out (each voice's engine)", "bad_engine"
            ) from None
        except EngineUnavailable as error:
            raise Unavailable(str(error)) from None
        if len(script.speakers) > engine.max_speakers:
            raise BadInput(
                f"{engine_name} speaks up to {engine.max_speakers} speakers; this script has "
                f"{len(script.speakers)}",
                "too_many_speakers",
            )
        voices = self.voices_for(script, request.voices)
        for voice in set(voices.values()):
            self.speech.resolve(voice)  # a voice that is not there is a 404 now, not a failed task
        languages = self._turn_languages(script, request)
        return [
            PlannedTurn(i, turn, voices[turn.speaker], engine_name, 1.0, 0.0, language)
            for i, (turn, language) in enumerate(zip(script.turns, languages, strict=True))
        ]

    def voices_for(
        self, script: Script, chosen: dict[str, str], languages: dict[str, set[str]] | None = None
    ) -> dict[str, str]:
        """Speaker id -> voice id: the chosen voice (by id or label), else a default no other speaker
        uses that speaks the speaker's `languages` (Piper's joe is left out of a Chinese script)."""
        known = {s.id for s in script.speakers} | {s.label for s in script.speakers}
        unknown = sorted(set(chosen) - known)
        if unknown:
            raise BadInput(
                f"voices given for speakers not in the script: {', '.join(unknown)}; "
                f"speakers: {', '.join(f'{s.id} ({s.label})' for s in script.speakers)}",
                "unknown_speaker",
            )
        voices = {s.id: chosen.get(s.id) or chosen.get(s.label) for s in script.speakers}
        spare = [v for v in DEFAULT_VOICES.values() if v not in voices.values()]
        for speaker_id, voice in voices.items():
            if not voice:
                able = [v for v in spare if self._speaks_all(v, (languages or {}).get(speaker_id, set()))]
                options = able or spare  # none able: the check after names the problem
                preferred = DEFAULT_VOICES[speaker_id]
                voices[speaker_id] = preferred if preferred in options else options[0]
                spare.remove(voices[speaker_id])
        return voices  # type: ignore[return-value]

    def _speaks_all(self, voice: str, languages: set[str]) -> bool:
        engine, voice = self.speech.resolve(voice)
        return all(self.speech.registry.engine(engine).speaks(voice, language) for language in languages)

    # ---- the "dialogue" task ---------------------------------------------------------------
    def task_kind(self) -> TaskKind:
        return TaskKind(
            "dialogue",
            self.run_task,
            config=DialogueConfig,
            resumable=True,
            prepare=self.prepare_task,
            is_short=is_short_dialogue,
        )

    def prepare_task(self, config: DialogueConfig) -> DialogueConfig:
        """A dialogue task's config checked (script, voices, languages, engine) and planned: every
        speaker's voice named, the defaults it picked included."""
        _, planned = self.plan(config)
        voices = {p.turn.speaker: p.voice for p in planned}
        return config.model_copy(update={"voices": voices})

    def run_task(self, context: TaskContext) -> dict[str, Any]:
        request: DialogueConfig = context.request
        _, planned = self.plan(request)  # checked again: a voice may have been deleted since
        return self.render(planned, request, context.folder, context)

    def one_pass_engine(self) -> str | None:
        """A dialogue engine that can run here (it speaks a whole script in one pass), if any."""
        able = self.speech.registry.available(Capability.DIALOGUE)
        return able[0].info.name if able else None

    def render(
        self,
        planned: list[PlannedTurn],
        request: DialogueConfig,
        folder: Path,
        context: TaskContext | None = None,
        references: dict[str, tuple[Path, str]] | None = None,
    ) -> dict[str, Any]:
        """Make every missing turn, then mix. Writes dialogue.* , .srt, .vtt, timing.json, stems.
        `references`: speaker id -> (clip, its words) a one-pass engine clones, over the voices' own."""
        turns_dir = folder / "_turns"
        turns_dir.mkdir(parents=True, exist_ok=True)
        if request.engine:
            if context:
                context.progress(5, f"{request.engine}: the whole script at once")
            self._render_whole_script(planned, turns_dir, context, references or {})
        total_chars = sum(len(p.turn.text) for p in planned) or 1
        done_chars = 0
        reused = 0
        for p in planned:
            if (
                turns_dir / f"{p.index:05d}.json"
            ).exists():  # made before a restart, or by the whole-script engine
                reused += 1
            else:
                if context:
                    context.progress(
                        95 * done_chars / total_chars, f"turn {p.index + 1}/{len(planned)} ({p.turn.label})"
                    )
                self._render_turn(p, request, turns_dir, context)
            done_chars += len(p.turn.text)
        if context and reused:
            context.log(f"kept {reused} turn(s) made before; made {len(planned) - reused}")
        if context:
            context.progress(96, "mixing")
        result = self._mix(planned, request.format, folder, turns_dir)
        if request.quality_check and not request.engine:
            result["quality"] = self._quality_report(planned, turns_dir, folder)
        return result

    def _render_turn(
        self, p: PlannedTurn, config: DialogueConfig, turns_dir: Path, context: TaskContext | None
    ) -> None:
        written_in = p.language or detect_language(
            p.turn.text, latin=self.speech.latin_language(p.voice, p.engine)
        )
        text = normalize_text(p.turn.text, written_in) if config.normalize else p.turn.text
        request = SpeechRequest(text=text, voice=p.voice, engine=p.engine, speed=p.speed, language=p.language)
        gate = QualityGate(self.speech.transcriber) if config.quality_check else None
        pieces, sentences, phonemes, checks, position = [], [], [], [], 0.0
        try:
            for chunk in self.speech.stream(request):
                if context:
                    context.check_cancelled()
                if gate:
                    chunk, check = self._checked(gate, chunk, request)
                    check.start = round(position + (SENTENCE_GAP_S if chunk.index else 0.0), 3)  # in the turn
                    checks.append(check.as_dict())
                audio = audio_io.resample(chunk.audio, chunk.sample_rate, MIX_RATE)
                gap = SENTENCE_GAP_S if chunk.index else 0.0
                sentences.append(
                    {"start": position + gap, "end": position + len(audio) / MIX_RATE, "text": chunk.text}
                )
                phonemes += [
                    [span.phoneme, round(position + span.start, 3), round(position + span.end, 3)]
                    for span in chunk.phonemes
                ]
                position += len(audio) / MIX_RATE
                pieces.append(audio)
        except BadInput as error:  # e.g. "١٢٣": letters the engine reads as nothing; one turn, not the task
            if error.code != "nothing_to_speak":
                raise
            if context:
                context.log(f"turn {p.index + 1} ({p.turn.label}): nothing the voice can read; left silent")
        audio = _fade(np.concatenate(pieces) if pieces else np.zeros(0, np.float32))
        sentences = _as_written(sentences, p.turn.text)
        wav, meta = turns_dir / f"{p.index:05d}.wav", turns_dir / f"{p.index:05d}.json"
        sf.write(wav, audio, MIX_RATE, subtype="FLOAT")
        # The .json is written last and atomically: a turn counts as done only when both exist.
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"sentences": sentences, "voice": p.voice, "engine": p.engine, "phonemes": phonemes}
                | ({"checks": checks} if gate else {})
            ),
            encoding="utf-8",
        )
        tmp.replace(meta)

    def _checked(
        self, gate: QualityGate, chunk: AudioChunk, request: SpeechRequest
    ) -> tuple[AudioChunk, SentenceCheck]:
        """One sentence of a turn through the quality gate: the take the speech service made first, then
        retakes of that sentence alone (a little slower or faster), with the same pause before it."""
        takes = {0: chunk}

        def make(attempt: int) -> tuple[np.ndarray, int]:
            if attempt not in takes:
                speed = retake_options(SynthesisOptions(speed=request.speed), attempt).speed
                stream = self.speech.stream(dataclasses.replace(request, text=chunk.text, speed=speed))
                retake = next(stream)
                stream.close()  # one sentence: its hold on the engine's admission ends now
                lead = SENTENCE_GAP_S if chunk.index else 0.0  # the stream's pause before a later sentence
                silence = np.zeros(int(lead * retake.sample_rate), np.float32)
                takes[attempt] = dataclasses.replace(
                    retake,
                    audio=np.concatenate([silence, retake.audio]),
                    index=chunk.index,
                    phonemes=tuple(span.shifted(lead) for span in retake.phonemes),
                    words=tuple(word.shifted(lead) for word in retake.words),
                )
            return takes[attempt].audio, takes[attempt].sample_rate

        audio, _, check = gate.take(chunk.index, chunk.text, request.language, make)
        return next(take for take in takes.values() if take.audio is audio), check

    def _quality_report(self, planned: list[PlannedTurn], turns_dir: Path, folder: Path) -> dict[str, Any]:
        """Every turn's sentence checks, numbered through the dialogue and placed in the mix (by
        timing.json): the result's summary, and quality.json with each sentence's turn and speaker."""
        starts = {t["index"]: t["start"] for t in json.loads((folder / "timing.json").read_text("utf-8"))}
        checks: list[SentenceCheck] = []
        rows = []
        for p in planned:
            meta = json.loads((turns_dir / f"{p.index:05d}.json").read_text(encoding="utf-8"))
            for found in meta.get("checks", []):
                check = SentenceCheck(**found | {"index": len(checks)})
                check.start = round(starts[p.index] + (check.start or 0.0), 3)
                checks.append(check)
                rows.append(check.as_dict() | {"turn": p.index, "speaker": p.turn.label})
        quality = summary(checks)
        report = json.dumps(quality | {"sentences": rows}, ensure_ascii=False, indent=1)
        (folder / "quality.json").write_text(report, encoding="utf-8")
        return quality

    @on_zero_gpu(lambda self, planned, *rest: whole_script_gpu_seconds(planned))
    def _render_whole_script(
        self,
        planned: list[PlannedTurn],
        turns_dir: Path,
        context: TaskContext | None = None,
        given: dict[str, tuple[Path, str]] | None = None,
    ) -> None:
        """One pass through a whole-script engine (MOSS-TTSD), cut into turns at the longest silences.

        Speakers are numbered [S1].. in order of appearance, each cloned from its clip in `given`
        (a JSONL batch's prompts) or else its voice's reference clip (`references`). The model gives no turn timing, so each turn's boundary is placed at the
        longest pause near where its share of the characters ends; timing.json marks these turns as
        `estimated`. A cancel reaches the engine (a worker stops its generation).
        """
        if (turns_dir / f"{planned[-1].index:05d}.json").exists():
            return
        engine = self.speech.registry.capable(ScriptSpeaker, planned[0].engine, load=True)
        speakers = list(dict.fromkeys(p.turn.speaker for p in planned))
        number = {speaker: index for index, speaker in enumerate(speakers, start=1)}
        script_text = "".join(f"[S{number[p.turn.speaker]}]{p.turn.text}" for p in planned)
        given = given or {}
        prompts = None
        if self.references is not None or all(s in given for s in speakers):
            first = {p.turn.speaker: p for p in reversed(planned)}  # each speaker's first turn
            prompts = [given.get(s) or self._reference(first[s]) for s in speakers]
        try:
            with _cancel_reaches(engine, context):
                audio = engine.synthesize_dialogue(script_text, prompts)
        except Exception:
            if context is not None:
                context.check_cancelled()  # a cancelled generation ends the task as cancelled
            raise
        if context is not None:
            context.log(
                f"{engine.info.name}: {len(audio) / engine.info.sample_rate:.2f} s of audio for "
                f"{len(planned)} turns of {len(speakers)} speakers in one pass"
            )
        audio = audio_io.resample(audio, engine.info.sample_rate, MIX_RATE)
        for p, piece in zip(
            planned, _split_at_pauses(audio, [len(p.turn.text) for p in planned]), strict=True
        ):
            sf.write(turns_dir / f"{p.index:05d}.wav", _fade(piece), MIX_RATE, subtype="FLOAT")
            meta = {
                "sentences": [{"start": 0.0, "end": len(piece) / MIX_RATE, "text": p.turn.text}],
                "estimated": True,
            }
            (turns_dir / f"{p.index:05d}.json").write_text(json.dumps(meta), encoding="utf-8")

    def _reference(self, first: PlannedTurn) -> tuple[Path, str]:
        """The speaker's voice's reference clip, in the language of its first turn."""
        assert self.references is not None
        return self.references(first.voice, first.language or detect_language(first.turn.text))

    def _mix(self, planned: list[PlannedTurn], fmt: str, folder: Path, turns_dir: Path) -> dict[str, Any]:
        speakers = sorted({p.turn.speaker for p in planned})
        gains = self._speaker_gains(planned, turns_dir)
        stems_dir = folder / "stems"
        stems_dir.mkdir(exist_ok=True)
        cues: list[Cue] = []
        timing = []
        position = 0.0
        mix_path = folder / "dialogue.wav"
        with (
            sf.SoundFile(mix_path, "w", MIX_RATE, 1, subtype="PCM_16") as mix,
            zipfile.ZipFile(folder / "turns.zip", "w", zipfile.ZIP_DEFLATED) as turn_zip,
        ):
            stems = {
                s: sf.SoundFile(stems_dir / f"{s}.wav", "w", MIX_RATE, 1, subtype="PCM_16") for s in speakers
            }
            try:
                for p in planned:
                    audio, _ = sf.read(turns_dir / f"{p.index:05d}.wav", dtype="float32")
                    audio = np.clip(audio * gains[p.turn.speaker], -0.99, 0.99)
                    silence = np.zeros(round(p.pause_s * MIX_RATE), np.float32)
                    start = position + p.pause_s
                    for s, stem in stems.items():
                        stem.write(silence)
                        stem.write(audio if s == p.turn.speaker else np.zeros_like(audio))
                    mix.write(silence)
                    mix.write(audio)
                    turn_zip.writestr(
                        f"{p.index + 1:04d}_{p.turn.speaker}.wav", audio_io.encode(audio, MIX_RATE, "wav")
                    )
                    meta = json.loads((turns_dir / f"{p.index:05d}.json").read_text(encoding="utf-8"))
                    for sentence in meta["sentences"]:
                        cues.append(
                            Cue(
                                start + sentence["start"],
                                start + sentence["end"],
                                f"[{p.turn.label}] {sentence['text']}",
                            )
                        )
                    end = start + len(audio) / MIX_RATE
                    timing.append(
                        {
                            "index": p.index,
                            "speaker": p.turn.speaker,
                            "label": p.turn.label,
                            "line": p.turn.line,
                            "text": p.turn.text,
                            "voice": p.voice,
                            "engine": p.engine,
                            "start": round(start, 3),
                            "end": round(end, 3),
                        }
                    )
                    if meta.get("estimated"):  # a one-pass turn: cut where its pause probably is
                        timing[-1]["estimated"] = True
                    if meta.get("phonemes"):  # where the engine gives them: [phoneme, start, end]
                        timing[-1]["phonemes"] = [
                            [ph, round(start + t0, 3), round(start + t1, 3)]
                            for ph, t0, t1 in meta["phonemes"]
                        ]
                    position = end
            finally:
                for stem in stems.values():
                    stem.close()
        (folder / "dialogue.srt").write_text(to_srt(cues), encoding="utf-8")
        (folder / "dialogue.vtt").write_text(to_vtt(cues), encoding="utf-8")
        (folder / "timing.json").write_text(
            json.dumps(timing, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        if fmt != "wav":
            _convert(mix_path, folder / f"dialogue.{fmt}")
        return {
            "duration": round(position, 3),
            "turns": len(planned),
            "speakers": {
                p.turn.speaker: {"label": p.turn.label, "voice": p.voice, "engine": p.engine} for p in planned
            },
            "audio": f"dialogue.{fmt}",
            "subtitles": "dialogue.srt",
        }

    def _speaker_gains(self, planned: list[PlannedTurn], turns_dir: Path) -> dict[str, float]:
        """One gain per speaker that brings its speech to TARGET_RMS (peaks are limited at mix time)."""
        energy: dict[str, float] = {}
        samples: dict[str, int] = {}
        for p in planned:
            audio, _ = sf.read(turns_dir / f"{p.index:05d}.wav", dtype="float32")
            voiced = audio[np.abs(audio) > 0.01]  # speech, not the pauses between sentences
            energy[p.turn.speaker] = energy.get(p.turn.speaker, 0.0) + float(np.sum(voiced**2))
            samples[p.turn.speaker] = samples.get(p.turn.speaker, 0) + len(voiced)
        return {s: TARGET_RMS / max(np.sqrt(energy[s] / max(samples[s], 1)), 1e-4) for s in energy}


def is_short_dialogue(config: DialogueConfig) -> bool:
    """A few turns turn by turn (not the whole-script GPU engine): the short-job lane may run it."""
    return len(config.script) <= SHORT_TASK_CHARS and not config.engine


@contextmanager
def _cancel_reaches(engine: ScriptSpeaker, context: TaskContext | None) -> Iterator[None]:
    """While the block runs, a cancel of the task is passed on to the engine's call in flight."""
    if context is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if context.cancelled:
                engine.cancel()
                return

    watcher = threading.Thread(target=watch, name="dialogue-cancel", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def whole_script_gpu_seconds(planned: list[PlannedTurn]) -> int:
    """ZeroGPU duration for one whole-script pass: grows with the script's text."""
    return gpu_duration("dialogue", sum(len(p.turn.text) for p in planned))


def _split_at_pauses(audio: np.ndarray, weights: list[int]) -> list[np.ndarray]:
    """Cut `audio` into len(weights) pieces, each cut at the quietest 50 ms near its expected place
    (within 1.5 s, and within half of the shorter of the two turns it separates, so cuts stay in order)."""
    frame = int(0.05 * MIX_RATE)
    energy = np.convolve(audio**2, np.ones(frame) / frame, mode="same")
    total, cuts, acc = sum(weights) or 1, [0], 0
    for weight, following in itertools.pairwise(weights):
        acc += weight
        expected = int(len(audio) * acc / total)
        window = min(int(1.5 * MIX_RATE), int(len(audio) * min(weight, following) / total / 2))
        low, high = max(cuts[-1], expected - window), min(len(audio), expected + window)
        cuts.append(low + int(np.argmin(energy[low:high])) if high > low else max(cuts[-1], expected))
    cuts.append(len(audio))
    return [audio[a:b].copy() for a, b in itertools.pairwise(cuts)]


def _as_written(sentences: list[dict[str, Any]], original: str) -> list[dict[str, Any]]:
    """Subtitles show the words as written, not as normalised for the engine ("$5", not "five dollars")."""
    written = split_sentences(original)
    if len(written) == len(sentences):
        return [s | {"text": text} for s, text in zip(sentences, written, strict=True)]
    if not sentences:
        return []
    return [{"start": sentences[0]["start"], "end": sentences[-1]["end"], "text": original}]


@contextmanager
def _on_line(turn: Turn) -> Iterator[None]:
    """A BadInput raised inside gets the turn's line and speaker in front of its message."""
    try:
        yield
    except BadInput as error:
        raise BadInput(f"line {turn.line} ({turn.label}): {error.message}", error.code) from None


def _fade(audio: np.ndarray) -> np.ndarray:
    n = min(int(FADE_S * MIX_RATE), len(audio) // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        audio[:n] *= ramp
        audio[-n:] *= ramp[::-1]
    return audio


def _convert(source: Path, target: Path) -> None:
    """wav file -> mp3/flac file with the bundled ffmpeg (file to file: memory stays flat)."""
    codec = {"mp3": ["-c:a", "libmp3lame", "-b:a", "160k"], "flac": ["-c:a", "flac"]}[target.suffix[1:]]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), *codec, str(target)]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {target.name}: {result.stderr.decode(errors='replace')}")
