"""The voice gallery: every voice described, a language filter, and previews made once that say the
sample in the voice (heard by the bundled ASR)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from studio import audio as audio_io
from studio.errors import NotFound
from studio.services.asr import transcript_error_rate
from studio.services.gallery import SAMPLES
from studio.ui.gallery_tab import gallery_rows


def test_every_voice_is_described_and_the_filter_keeps_those_that_speak_the_language(
    studio_client: TestClient,
) -> None:
    studio = studio_client.app.state.studio
    voices = {voice.id: voice for voice in studio.gallery.voices()}
    assert {"jf_alpha", "jm_kumo", "joe"} <= set(voices)
    kumo, joe = voices["jm_kumo"], voices["joe"]
    assert (kumo.language, kumo.gender, kumo.engine, kumo.kind) == ("ja", "male", "kokoro", "built-in")
    assert "Apache-2.0" in kumo.license and "GPL-3.0" in joe.license
    assert joe.language == "en-us" and joe.gender == "male"

    chinese = {voice.id for voice in studio.gallery.voices("zh")}
    assert "jm_kumo" in chinese and "joe" not in chinese  # Piper's joe speaks English only
    assert {"en-us", "ja", "zh"} <= set(studio.gallery.languages())
    rows = gallery_rows(studio, "zh")
    assert rows and all(row[4] == "kokoro" for row in rows)


def test_a_preview_says_the_sample_and_is_made_once(studio_client: TestClient, transcriber) -> None:  # type: ignore[no-untyped-def]
    studio = studio_client.app.state.studio
    path = studio.gallery.preview("joe")
    made = path.stat().st_mtime_ns
    audio, rate = audio_io.decode(path.read_bytes())
    heard = transcriber.transcribe(audio, rate, "en-us")
    assert transcript_error_rate(SAMPLES["en"], heard.text, "en-us") <= 0.25, heard.text

    started = time.monotonic()
    again = studio.gallery.preview("joe")
    assert again == path and again.stat().st_mtime_ns == made  # kept, not made again
    assert time.monotonic() - started < 0.5

    mandarin = studio.gallery.preview("jf_nezumi", "zh")  # a voice that speaks the filter's language
    audio, rate = audio_io.decode(mandarin.read_bytes())
    heard = transcriber.transcribe(audio, rate, "zh")
    assert transcript_error_rate(SAMPLES["zh"], heard.text, "zh") <= 0.35, heard.text

    with pytest.raises(NotFound, match="no voice 'nobody'"):
        studio.gallery.preview("nobody")
