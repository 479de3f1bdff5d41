"""The voice gallery: every voice the studio can speak with here, described (language, gender,
engine, license), and a short preview of each in its own language, made once and kept on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engines.registry import EngineRegistry
from engines.text import LANGUAGE_NAMES, base_language
from studio import audio as audio_io
from studio.errors import NotFound
from studio.services.speech import SpeechRequest, SpeechService

# What a preview says, by language family: short, with a question and a number, so a listener hears
# the voice's pace and intonation.
SAMPLES = {
    "en": "Hello! This is how I sound. Shall I read you the first 3 pages?",
    "ja": "こんにちは。これが私の声です。最初の三ページを読みましょうか？",
    "zh": "你好！这就是我的声音。要我给你读前三页吗？",
    "es": "¡Hola! Así suena mi voz. ¿Te leo las tres primeras páginas?",
    "fr": "Bonjour ! Voici ma voix. Je vous lis les trois premières pages ?",
    "it": "Ciao! Questa è la mia voce. Ti leggo le prime tre pagine?",
    "pt": "Olá! Esta é a minha voz. Quer que eu leia as três primeiras páginas?",
    "de": "Hallo! So klingt meine Stimme. Soll ich dir die ersten drei Seiten vorlesen?",
    "hi": "नमस्ते! मेरी आवाज़ ऐसी है। क्या मैं आपको पहले तीन पन्ने पढ़कर सुनाऊँ?",
}
PREVIEW_FORMAT = "mp3"


@dataclass(frozen=True)
class GalleryVoice:
    id: str
    name: str
    language: str  # the voice's own language (a studio code)
    gender: str  # "" where unknown
    engine: str
    license: str
    kind: str  # "built-in" or "library"
    speaks: tuple[str, ...]  # the languages it can speak (Kokoro's Japanese packs speak English too)

    @property
    def language_name(self) -> str:
        return LANGUAGE_NAMES.get(self.language, self.language)


class VoiceGallery:
    """Lists every usable voice with what a chooser needs, and speaks each one's preview once."""

    def __init__(self, registry: EngineRegistry, speech: SpeechService, folder: Path) -> None:
        self.registry = registry
        self.speech = speech
        self.folder = folder

    def voices(self, language: str | None = None) -> list[GalleryVoice]:
        """Built-in voices of the engines that can run here, then fitted library voices; with
        `language`, only the voices that speak a language of that family ("en": en-us, en-gb)."""
        voices = [
            GalleryVoice(
                v.id,
                v.name,
                v.language,
                v.gender,
                v.engine,
                self.registry.engine(v.engine).info.license,
                "built-in",
                v.languages or (v.language,),
            )
            for v in self.registry.voices()
        ]
        voices += [
            GalleryVoice(
                v["id"],
                v["name"],
                v["language"],
                "",
                v["engine"],
                self.registry.engine(v["engine"]).info.license,
                "library",
                (v["language"],),
            )
            for v in self.speech.usable_library_voices()
        ]
        if language:
            family = base_language(language)
            voices = [v for v in voices if any(base_language(code) == family for code in v.speaks)]
        return voices

    def languages(self) -> list[str]:
        """The languages the listed voices speak, each once, in the studio's order."""
        present = {code for voice in self.voices() for code in voice.speaks}
        return [code for code in LANGUAGE_NAMES if code in present] + sorted(present - set(LANGUAGE_NAMES))

    def preview(self, voice_id: str, language: str | None = None) -> Path:
        """The voice saying a sample (an MP3) in `language` where it speaks it, else in its own, made
        on first asking and kept: its name carries the engine's model and voice versions, so a
        changed voice gets a new preview."""
        voice = next((v for v in self.voices() if v.id == voice_id), None)
        if voice is None:
            raise NotFound(
                f"no voice '{voice_id}' in the gallery: pick one the gallery lists", "voice_not_found"
            )
        spoken = next(
            (code for code in voice.speaks if language and base_language(code) == base_language(language)),
            voice.language,
        )
        text = SAMPLES.get(base_language(spoken), SAMPLES["en"])
        version = self.registry.engine(voice.engine).cache_key(voice.id) or ""
        key = hashlib.sha256(f"{voice.engine}\n{voice.id}\n{version}\n{text}".encode()).hexdigest()[:24]
        path = self.folder / f"{key}.{PREVIEW_FORMAT}"
        if path.exists():
            return path
        speech = self.speech.synthesize(SpeechRequest(text, voice.id, voice.engine, language=spoken))
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{PREVIEW_FORMAT}.partial")
        partial.write_bytes(audio_io.encode(speech.audio, speech.sample_rate, PREVIEW_FORMAT))
        partial.replace(path)  # whole or absent
        return path
