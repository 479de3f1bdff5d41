"""Audiobook service: a book -> the "audiobook" task -> an M4B with chapters, an MP3 per chapter,
subtitles, a chapter list and the quality gate's report.

The task is resumable and its memory does not grow with the book: each sentence is kept on disk the
moment it is made (with its quality check), each finished chapter becomes one WAV (streamed from its
sentences), and the M4B, the MP3s and the subtitles are written by streaming those files through
ffmpeg. A restart makes no finished chapter or sentence again.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import imageio_ffmpeg
import numpy as np
import soundfile as sf
from pydantic import Field, StringConstraints

from engines.base import SynthesisOptions
from engines.text import detect_language, split_sentences
from studio import audio as audio_io
from studio.errors import BadInput, NotFound
from studio.services.asr import Transcriber
from studio.services.audiobook.books import Book, book_suffix, read_book
from studio.services.quality import QualityGate, SentenceCheck, retake_options, summary
from studio.services.speech import NOTHING_TO_SPEAK, SENTENCE_GAP_S, SpeechService, narration_parts
from studio.subtitles import Cue, to_srt, to_vtt
from studio.tasks.configs import LANGUAGE_HELP, LanguageName, TaskConfig
from studio.tasks.records import Task
from studio.tasks.runner import TaskContext, TaskKind, TaskRunner

BOOK_RATE = 24_000  # every voice resampled to one rate
DEFAULT_NARRATOR = "jm_kumo"
PARAGRAPH_GAP_S = 0.5  # between paragraphs, over the sentence gap
CHAPTER_TAIL_S = 1.5  # silence closing each chapter, before the next one's title
AAC_BITRATE = "64k"  # speech: 64 kb/s AAC is transparent enough and ~29 MB an hour
MP3_BITRATE = "96k"
KEPT_BOOK = r"^([0-9a-f]{32}\.(epub|pdf|md|txt))?$"

ChapterNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,5}$")]  # JSON keys are strings
Progress = Callable[[float, str], None]


class AudiobookConfig(TaskConfig):
    """An "audiobook" task: a book the server keeps (by content; the route or tab uploads it) read
    chapter by chapter in a narrator's voice, quoted speech in a character's voice if one is given.
    Stored planned: both voices resolved, `chapters` listing every chapter made."""

    book: str = Field(
        "", pattern=KEPT_BOOK, description="the uploaded book as kept by the server (set by the upload)"
    )
    voice: str = Field(DEFAULT_NARRATOR, description="the narrator's voice id")
    character_voice: str | None = Field(
        None, description='voice for quoted speech ("…", “…”, 「…」); default: the narrator\'s'
    )
    chapters: list[Annotated[int, Field(ge=1, le=99_999)]] = Field(
        default_factory=list, description="chapter numbers to make (1 = the first); empty: every chapter"
    )
    titles: dict[ChapterNumber, Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=dict, description="chapter number -> its title in the M4B (default: the book's)"
    )
    title: str | None = Field(None, max_length=300, description="the book's title (default: the book's own)")
    author: str | None = Field(None, max_length=300, description="the author (default: the book's own)")
    speed: float = Field(1.0, ge=0.25, le=4.0)
    language: LanguageName | None = Field(None, description=LANGUAGE_HELP)
    quality_check: bool = Field(
        True, description="hear every sentence back with the bundled ASR and make a misspoken one again"
    )


@dataclass(frozen=True)
class Unit:
    """One sentence to speak: its words, whether it is quoted speech, whether a paragraph ends after it."""

    text: str
    quoted: bool
    paragraph_end: bool


class AudiobookService:
    """Reads uploaded books, keeps them by content, and runs the resumable "audiobook" task."""

    def __init__(
        self,
        speech: SpeechService,
        transcriber: Transcriber,
        runner: TaskRunner,
        upload_dir: Path,
        max_upload_bytes: int,
    ) -> None:
        self.speech = speech
        self.runner = runner
        self.transcriber = transcriber
        self.upload_dir = upload_dir
        self.max_upload_bytes = max_upload_bytes

    # ---- books ------------------------------------------------------------------------------------
    def read(self, data: bytes, filename: str) -> Book:
        """The book in an upload (its name says its kind); 4xx saying what is wrong with it."""
        return read_book(data, filename, self.max_upload_bytes)

    def keep(self, data: bytes, filename: str) -> str:
        """Keep an uploaded book (after reading it) by content; its name for a config's `book`."""
        self.read(data, filename)
        name = f"{hashlib.sha256(data).hexdigest()[:32]}.{book_suffix(filename)}"
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        if not (path := self.upload_dir / name).exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        return name

    def kept(self, name: str) -> Book:
        """A kept book, read again (the task reads the same chapters the user picked from)."""
        if not name:
            raise BadInput("book: upload the book (POST /api/v1/audiobook or the Audiobook tab)", "bad_book")
        path = self.upload_dir / name
        if not path.is_file():
            raise NotFound(f"book '{name}' is not kept here any more: upload it again", "unknown_book")
        return read_book(path.read_bytes(), name, self.max_upload_bytes)

    def submit(self, data: bytes, filename: str, config: AudiobookConfig, name: str, owner: str) -> Task:
        """An audiobook task for an uploaded book: everything wrong is a 4xx before the task exists."""
        kept = self.keep(data, filename)
        return self.runner.submit(
            "audiobook", name or "audiobook", config.model_copy(update={"book": kept}), owner
        )

    # ---- the task ---------------------------------------------------------------------------------
    def task_kind(self) -> TaskKind:
        return TaskKind(
            "audiobook", self.run_task, config=AudiobookConfig, resumable=True, prepare=self.prepare_task
        )

    def prepare_task(self, config: AudiobookConfig) -> AudiobookConfig:
        """The config checked against the book and the server (chapters, voices, languages) and
        planned: voices resolved, every chapter to make listed."""
        book = self.kept(config.book)
        count = len(book.chapters)
        if wrong := [n for n in config.chapters if n > count] + [
            int(k) for k in config.titles if not 1 <= int(k) <= count
        ]:
            raise BadInput(
                f"chapters: the book has chapters 1-{count}; there is no chapter {wrong[0]}", "bad_chapters"
            )
        chosen = sorted(set(config.chapters)) or list(range(1, count + 1))
        text = "\n".join(book.chapters[n - 1].text for n in chosen)
        if not split_sentences(text):
            raise BadInput(f"the chapters chosen: {NOTHING_TO_SPEAK}", "nothing_to_speak")
        voices = {}
        for field, voice in (("voice", config.voice), ("character_voice", config.character_voice)):
            if voice:
                engine, resolved = self.speech.resolve(voice)
                self.speech.check_languages(engine, resolved, text, config.language)
                voices[field] = resolved
        return config.model_copy(update={**voices, "chapters": chosen})

    def run_task(self, context: TaskContext) -> dict[str, Any]:
        config: AudiobookConfig = self.prepare_task(context.request)  # again: a voice may be gone
        return self.render(config, context.folder, context.progress, context.log)

    def render(
        self, config: AudiobookConfig, folder: Path, progress: Progress, log: Callable[[str], None]
    ) -> dict[str, Any]:
        """Make every missing sentence and chapter of the (planned) config in `folder`, then the
        book's files. `progress(percent, step)` is called between sentences (a task's raises on cancel)."""
        book = self.kept(config.book)
        chosen = [(n, config.titles.get(str(n)) or book.chapters[n - 1].title) for n in config.chapters]
        work = folder / "_chapters"
        work.mkdir(parents=True, exist_ok=True)
        gate = QualityGate(self.transcriber) if config.quality_check else None
        sizes = [len(book.chapters[n - 1].text) for n, _ in chosen]
        total, done_chars = sum(sizes) or 1, 0
        kept_chapters = sum((work / f"{n:05d}.json").exists() for n, _ in chosen)
        if kept_chapters:
            log(f"resuming: {kept_chapters} of {len(chosen)} chapter(s) already made")
        for position, ((number, _), size) in enumerate(zip(chosen, sizes, strict=True), 1):
            if not (work / f"{number:05d}.json").exists():
                step = f"chapter {position}/{len(chosen)}"

                def report(
                    fraction: float, detail: str, base: int = done_chars, size: int = size, step: str = step
                ) -> None:
                    progress(95 * (base + fraction * size) / total, f"{step}: {detail}")

                self._make_chapter(book.chapters[number - 1].text, number, config, work, gate, report, log)
            done_chars += size
        progress(96, "writing the book")
        return self._assemble(book, chosen, config, folder, work)

    def _make_chapter(
        self,
        text: str,
        number: int,
        config: AudiobookConfig,
        work: Path,
        gate: QualityGate | None,
        report: Progress,
        log: Callable[[str], None],
    ) -> None:
        """Each missing sentence of one chapter (kept as <n>.wav + <n>.json), then the chapter's WAV
        streamed from them and its <chapter>.json (written last: the chapter is done); the sentence
        WAVs go then (a long book's float parts would otherwise double its disk use)."""
        parts = work / f"{number:05d}"
        parts.mkdir(exist_ok=True)
        units = chapter_units(text)
        language = self.speech.language(config.language)
        latin = {
            voice: self.speech.latin_language(voice)
            for voice in (config.voice, config.character_voice)
            if voice
        }
        made = 0
        for i, unit in enumerate(units):
            meta = parts / f"{i:05d}.json"
            if meta.exists():
                continue
            report(i / max(len(units), 1), f"sentence {i + 1}/{len(units)}")
            voice = config.character_voice if unit.quoted and config.character_voice else config.voice
            spoken_in = language or detect_language(unit.text, text, latin[voice])
            make = self._maker(unit.text, voice, SynthesisOptions(speed=config.speed, language=spoken_in))
            if gate:
                audio, rate, check = gate.take(i, unit.text, spoken_in, make)
            else:
                audio, rate = make(0)
                check = None
            sf.write(
                parts / f"{i:05d}.wav", audio_io.resample(audio, rate, BOOK_RATE), BOOK_RATE, subtype="FLOAT"
            )
            record = {
                "text": unit.text,
                "voice": voice,
                "quoted": unit.quoted,
                "check": check.as_dict() if check else None,
            }
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
            tmp.replace(meta)  # the sentence counts as made only now
            made += 1
        if made < len(units):
            log(f"chapter {number}: kept {len(units) - made} sentence(s) made before; made {made}")
        report(1.0, "joining the chapter")
        sentences, position = [], 0.0
        with sf.SoundFile(work / f"{number:05d}.wav", "w", BOOK_RATE, 1, subtype="PCM_16") as out:
            for i in range(len(units)):
                audio, _ = sf.read(parts / f"{i:05d}.wav", dtype="float32")
                record = json.loads((parts / f"{i:05d}.json").read_text(encoding="utf-8"))
                if len(audio):
                    gap = (
                        (SENTENCE_GAP_S + (PARAGRAPH_GAP_S if i and units[i - 1].paragraph_end else 0.0))
                        if sentences
                        else 0.0
                    )
                    out.write(np.zeros(round(gap * BOOK_RATE), np.float32))
                    out.write(np.clip(audio, -0.99, 0.99))
                    start = position + gap
                    position = start + len(audio) / BOOK_RATE
                    sentences.append({**record, "start": round(start, 3), "end": round(position, 3)})
            out.write(np.zeros(round(CHAPTER_TAIL_S * BOOK_RATE), np.float32))
            frames = out.frames
        done = work / f"{number:05d}.json"
        tmp = done.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"frames": frames, "sentences": sentences}, ensure_ascii=False), encoding="utf-8"
        )
        tmp.replace(done)
        for i in range(len(units)):  # the chapter's WAV holds them now (their checks stay in the .json)
            (parts / f"{i:05d}.wav").unlink(missing_ok=True)

    def _maker(
        self, text: str, voice: str, options: SynthesisOptions
    ) -> Callable[[int], tuple[np.ndarray, int]]:
        """make(attempt) -> one sentence's take in `voice` (later attempts varied for the quality gate)."""
        engine_name, engine_voice = self.speech.resolve(voice)
        engine = self.speech.registry.loaded(engine_name)
        languages = [options.language] if options.language else []
        said, phonemes = self.speech.lexicon_applied(text, languages, engine.takes_phonemes)
        options = replace(options, pronunciations=phonemes)

        def make(attempt: int) -> tuple[np.ndarray, int]:
            chunks = list(engine.synthesize(said, engine_voice, retake_options(options, attempt)))
            audio = np.concatenate([c.audio for c in chunks]) if chunks else np.zeros(0, np.float32)
            return audio_io.fade_edges(
                audio.astype(np.float32), engine.info.sample_rate
            ), engine.info.sample_rate

        return make

    def _assemble(
        self, book: Book, chosen: list[tuple[int, str]], config: AudiobookConfig, folder: Path, work: Path
    ) -> dict[str, Any]:
        """book.m4b, chapters/NN.mp3, book.srt/.vtt, chapters.json and timing.json from the chapter files."""
        title, author = config.title or book.title, config.author or book.author
        mp3_dir = folder / "chapters"
        mp3_dir.mkdir(exist_ok=True)
        cues, timing, listed, checks, start = [], [], [], [], 0.0
        for number, name in chosen:
            meta = json.loads((work / f"{number:05d}.json").read_text(encoding="utf-8"))
            end = start + meta["frames"] / BOOK_RATE
            mp3 = f"chapters/{number:03d}.mp3"
            listed.append(
                {"number": number, "title": name, "start": round(start, 3), "end": round(end, 3), "file": mp3}
            )
            for s in meta["sentences"]:
                cues.append(Cue(start + s["start"], start + s["end"], s["text"]))
                timing.append(
                    {
                        "chapter": number,
                        "text": s["text"],
                        "voice": s["voice"],
                        "quoted": s["quoted"],
                        "start": round(start + s["start"], 3),
                        "end": round(start + s["end"], 3),
                    }
                )
                if s["check"]:
                    checks.append(SentenceCheck(**{**s["check"], "start": round(start + s["start"], 3)}))
            _ffmpeg(
                [
                    "-i",
                    str(work / f"{number:05d}.wav"),
                    "-c:a",
                    "libmp3lame",
                    "-b:a",
                    MP3_BITRATE,
                    "-metadata",
                    f"title={name}",
                    "-metadata",
                    f"album={title}",
                    "-metadata",
                    f"artist={author}",
                    "-metadata",
                    f"track={number}",
                    str(folder / mp3),
                ]
            )
            start = end
        self._write_m4b(folder, work, chosen, listed, title, author, book.cover)
        (folder / "book.srt").write_text(to_srt(cues), encoding="utf-8")
        (folder / "book.vtt").write_text(to_vtt(cues), encoding="utf-8")
        (folder / "chapters.json").write_text(
            json.dumps(listed, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        (folder / "timing.json").write_text(
            json.dumps(timing, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        result: dict[str, Any] = {
            "title": title,
            "author": author,
            "duration": round(start, 3),
            "chapters": len(chosen),
            "sentences": len(timing),
            "audio": "book.m4b",
            "subtitles": "book.srt",
        }
        if config.quality_check:
            result["quality"] = summary(checks)
        return result

    def _write_m4b(
        self,
        folder: Path,
        work: Path,
        chosen: list[tuple[int, str]],
        listed: list[dict[str, Any]],
        title: str,
        author: str,
        cover: bytes | None,
    ) -> None:
        """The chapter WAVs streamed by ffmpeg's concat demuxer into AAC in MP4, with an FFMETADATA1
        file's chapters (ms), the title and author, and the cover as an attached picture."""
        listing = work / "concat.txt"
        listing.write_text("".join(f"file '{work / f'{n:05d}.wav'}'\n" for n, _ in chosen), encoding="utf-8")
        metadata = work / "metadata.txt"
        lines = [
            ";FFMETADATA1",
            f"title={_escape(title)}",
            f"album={_escape(title)}",
            f"artist={_escape(author)}",
            "genre=Audiobook",
        ]
        for chapter in listed:
            lines += [
                "[CHAPTER]",
                "TIMEBASE=1/1000",
                f"START={round(chapter['start'] * 1000)}",
                f"END={round(chapter['end'] * 1000)}",
                f"title={_escape(chapter['title'])}",
            ]
        metadata.write_text("\n".join(lines) + "\n", encoding="utf-8")
        args = ["-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(metadata)]
        maps = ["-map", "0:a", "-map_metadata", "1", "-map_chapters", "1"]
        if cover:
            (work / "cover.jpg").write_bytes(cover)
            args += ["-i", str(work / "cover.jpg")]
            maps += ["-map", "2:v", "-c:v", "copy", "-disposition:v", "attached_pic"]
        tmp = folder / "_book.m4b"
        _ffmpeg(
            [
                *args,
                *maps,
                "-c:a",
                "aac",
                "-b:a",
                AAC_BITRATE,
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                str(tmp),
            ]
        )
        tmp.replace(folder / "book.m4b")


def chapter_units(text: str) -> list[Unit]:
    """A chapter's sentences in reading order, each marked quoted speech or narration (by the speech
    service's own splitter), and whether its paragraph ends after it."""
    units: list[Unit] = []
    for paragraph in text.split("\n\n"):
        pieces = [
            (sentence, quoted)
            for part, quoted in narration_parts(paragraph)
            for sentence in split_sentences(part)
        ]
        units += [Unit(s, q, i == len(pieces) - 1) for i, (s, q) in enumerate(pieces)]
    return units


def chapter_numbers(text: str) -> list[int]:
    """ "1,3,5-7" -> [1, 3, 5, 6, 7]; 422 naming what is not a chapter number."""
    numbers: list[int] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        first, _, last = item.partition("-")
        if not (first.strip().isdigit() and (not last or last.strip().isdigit())):
            raise BadInput(f"chapters: '{item}' is not a chapter number or range like 5-7", "bad_chapters")
        low, high = int(first), int(last or first)
        if not 1 <= low <= high <= 99_999:
            raise BadInput(f"chapters: '{item}' is not a range of chapter numbers from 1", "bad_chapters")
        numbers += range(low, high + 1)
    return numbers


def _escape(value: str) -> str:
    """A value for an FFMETADATA1 file: = ; # \\ and newlines escaped."""
    for char in "\\=;#":
        value = value.replace(char, "\\" + char)
    return value.replace("\n", " ")


def _ffmpeg(args: list[str]) -> None:
    """Run the bundled ffmpeg (file to file: memory stays flat); RuntimeError with its message."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"ffmpeg could not write {Path(args[-1]).name}: {result.stderr.decode(errors='replace')[-800:]}"
        )
