"""Sentence splitting, subtitles and audio encode/decode round trips."""

from __future__ import annotations

import numpy as np
import pytest

from engines.text import split_sentences
from studio import audio as audio_io
from studio.services.asr import word_error_rate
from studio.subtitles import Cue, to_srt, to_vtt


def test_sentences_split_on_latin_and_cjk_marks_and_keep_abbreviations() -> None:
    text = "Dr. Smith arrived. Was he late?  No!\n今日は晴れです。明日は雨？ Done"
    assert split_sentences(text) == [
        "Dr. Smith arrived.",
        "Was he late?",
        "No!",
        "今日は晴れです。",
        "明日は雨？",
        "Done",
    ]


def test_long_sentences_are_cut_at_clauses_then_words() -> None:
    sentence = ", ".join(["word " * 20] * 5) + "."
    pieces = split_sentences(sentence, max_chars=120)
    assert all(len(p) <= 120 for p in pieces)
    assert " ".join(pieces).split() == sentence.split()
    assert split_sentences("。。。 ... !!") == []  # punctuation alone is not a sentence


def test_word_error_rate_reads_numbers_as_the_words_they_are() -> None:
    # Whisper writes digits where a script spells numbers: that is not a misheard word.
    said = "The meeting moved to three o'clock on the twenty-first; one thousand came."
    assert word_error_rate(said, "The meeting moved to 3 o'clock on the 21st, 1,000 came.") == 0.0
    assert word_error_rate("Pay 2.5 dollars.", "pay two point five dollars") == 0.0
    one_wrong = word_error_rate(said, "The meeting moved to 4 o'clock on the 21st, 1,000 came.")
    assert one_wrong == pytest.approx(1 / 13)  # 13 words once spelled out ("twenty first", "one thousand")
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "words") == 1.0


def test_srt_and_vtt_timestamps() -> None:
    cues = [Cue(0.0, 1.5, "[S1] Hello."), Cue(3661.25, 3662.0, "[S2] Hi.")]
    assert to_srt(cues) == (
        "1\n00:00:00,000 --> 00:00:01,500\n[S1] Hello.\n\n2\n01:01:01,250 --> 01:01:02,000\n[S2] Hi.\n"
    )
    assert to_vtt(cues).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n[S1] Hello.\n")


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "opus", "aac"])
def test_every_format_round_trips_with_its_duration(fmt: str) -> None:
    rate = 24000
    t = np.arange(int(1.5 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    decoded, decoded_rate = audio_io.decode(audio_io.encode(tone, rate, fmt))
    assert abs(len(decoded) / decoded_rate - 1.5) < 0.08
    assert np.sqrt(np.mean(decoded**2)) > 0.2  # still the tone, not silence


def test_decode_rejects_garbage_with_a_reason() -> None:
    with pytest.raises(audio_io.AudioError, match="empty"):
        audio_io.decode(b"")
    with pytest.raises(audio_io.AudioError):
        audio_io.decode(b"this is not audio at all" * 10)


def test_peak_limit_only_scales_down() -> None:
    loud = np.array([0.0, 1.7, -0.4], np.float32)
    assert np.max(np.abs(audio_io.limit_peak(loud))) == pytest.approx(0.98)
    quiet = np.array([0.1, -0.2], np.float32)
    assert np.array_equal(audio_io.limit_peak(quiet), quiet)
