"""Word timestamps and pronunciation overrides in the embedded engines (Kokoro, Piper), heard back
with the bundled ASR, and the captioned speech route.

Timing is checked two ways: against the acoustic onsets (a word after a pause starts within 80 ms
of where the sound comes back; measured: Kokoro +10..+45 ms, Piper -35..-60 ms, its closures and
onsets counted in the word), and against Whisper's word timestamps, which run early on this audio
(median 90-135 ms before ours, up to ~350 ms), so the bound there is 250 ms; the numbers are
printed (`-s`) for the record.
"""

from __future__ import annotations

import base64
import difflib
import io
import itertools
import re
import unicodedata

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from engines.base import AudioChunk, Engine, SynthesisOptions
from studio.services.asr import Transcriber, simplified, word_error_rate

TOMATO = "təmˈɑːtoʊ"  # British, where espeak's en-us says "təmˈeɪɾoʊ"
ENGLISH = "We walked along the quiet road until sunset, and then we went home for dinner."
MANDARIN = "今天天气很好，我们去公园散步吧。"


@pytest.fixture(scope="module")
def engines(studio_client: TestClient) -> dict[str, Engine]:
    registry = studio_client.app.state.studio.registry  # type: ignore[attr-defined]
    return {"kokoro": registry.loaded("kokoro"), "piper": registry.loaded("piper")}


VOICES = {"kokoro": "jf_alpha", "piper": "joe"}


def speak(engine: Engine, text: str, **options: object) -> list[AudioChunk]:
    return list(engine.synthesize(text, VOICES[engine.info.name], SynthesisOptions(**options)))  # type: ignore[arg-type]


def said(chunks: list[AudioChunk]) -> str:
    return unicodedata.normalize("NFC", "".join(span.phoneme for c in chunks for span in c.phonemes))


@pytest.mark.parametrize("name", ["kokoro", "piper"])
def test_an_override_replaces_the_g2p_phonemes_of_its_word(
    engines: dict[str, Engine], transcriber: Transcriber, name: str
) -> None:
    text = "I would like a tomato with my bread."
    plain = said(speak(engines[name], text, language="en-us"))
    chunks = speak(engines[name], text, language="en-us", pronunciations={"tomato": TOMATO})
    phonemes = said(chunks)
    assert "təmˈeɪɾoʊ" in plain and "təmˈeɪɾoʊ" not in phonemes
    assert TOMATO in phonemes
    assert phonemes.replace(TOMATO, "") == plain.replace("təmˈeɪɾoʊ", "")  # the rest as espeak reads it
    heard = transcriber.transcribe(chunks[0].audio, chunks[0].sample_rate, "en")
    assert word_error_rate(text, heard.text) <= 0.15, heard.text
    tomato = next(w for w in chunks[0].words if w.written == "tomato")
    assert 0.3 < tomato.end - tomato.start < 1.0


def matched_starts(chunk: AudioChunk, heard: list[tuple[str, float, float]]) -> list[float]:
    """Whisper's start minus ours, for each word both have (aligned by their words in order)."""
    ours = [re.sub(r"[^\w']", "", w.spoken.split()[0].lower()) for w in chunk.words]
    theirs = [re.sub(r"[^\w']", "", w.lower()) for w, _, _ in heard]
    gaps = []
    for tag, i1, i2, j1, _ in difflib.SequenceMatcher(None, ours, theirs, autojunk=False).get_opcodes():
        if tag == "equal":
            gaps += [heard[j1 + k][1] - chunk.words[i1 + k].start for k in range(i2 - i1)]
    return gaps


@pytest.mark.parametrize("name", ["kokoro", "piper"])
def test_english_words_start_where_they_are_heard(
    engines: dict[str, Engine], transcriber: Transcriber, name: str
) -> None:
    (chunk,) = speak(engines[name], ENGLISH, language="en-us")
    assert [w.written for w in chunk.words] == re.findall(r"[\w']+", ENGLISH)
    starts = [w.start for w in chunk.words]
    assert starts == sorted(starts) and all(w.start <= w.end <= chunk.duration + 0.01 for w in chunk.words)
    gaps = np.array(matched_starts(chunk, transcriber.words(chunk.audio, chunk.sample_rate, "en")))
    print(
        f"\n{name}: {len(gaps)}/{len(chunk.words)} words matched; Whisper minus ours: median "
        f"{np.median(gaps) * 1000:.0f} ms, |gap| <= 80 ms for {np.mean(abs(gaps) <= 0.08):.0%}, "
        f"<= 250 ms for {np.mean(abs(gaps) <= 0.25):.0%}"
    )
    assert len(gaps) >= 0.8 * len(chunk.words)
    assert np.mean(abs(gaps) <= 0.25) >= 0.9


@pytest.mark.parametrize("name", ["kokoro", "piper"])
def test_a_word_after_a_pause_starts_where_the_sound_comes_back(
    engines: dict[str, Engine], name: str
) -> None:
    steady = {"noise_scale": 0.0, "noise_w_scale": 0.0} if name == "piper" else {}  # the same take each run
    (chunk,) = speak(engines[name], "One, two, three, four, five.", language="en-us", extra=steady)
    hop = chunk.sample_rate // 100  # 10 ms
    loud = np.sqrt(np.mean(chunk.audio[: len(chunk.audio) // hop * hop].reshape(-1, hop) ** 2, axis=1)) > 0.02
    errors = []
    for before, word in zip(chunk.words, chunk.words[1:], strict=False):
        silent = [i for i in range(int(before.end * 100) - 5, int(word.start * 100) + 10) if not loud[i]]
        onset = next(i for i in range(silent[-1], len(loud)) if loud[i]) / 100  # after the pause's silence
        errors.append(word.start - onset)
    print(f"\n{name}: word start minus sound onset after a comma: {np.round(np.array(errors) * 1000)} ms")
    assert all(abs(error) <= 0.08 for error in errors)


def test_mandarin_words_start_where_their_characters_are_heard(
    engines: dict[str, Engine], transcriber: Transcriber
) -> None:
    (chunk,) = speak(engines["kokoro"], MANDARIN, language="zh")
    assert "".join(w.written for w in chunk.words) == re.sub(r"\W", "", MANDARIN)
    ours, at = {}, 0  # character offset -> start of our word beginning there
    for word in chunk.words:
        ours[at] = word.start
        at += len(word.written)
    gaps, at = [], 0
    for text, start, _ in transcriber.words(chunk.audio, chunk.sample_rate, "zh"):
        characters = re.sub(r"\W", "", simplified(text))
        if at in ours and characters:
            gaps.append(start - ours[at])
        at += len(characters)
    gaps_ms = np.round(np.array(gaps) * 1000)
    print(f"\nkokoro zh: {len(gaps)} word starts shared with Whisper's; Whisper minus ours: {gaps_ms} ms")
    assert len(gaps) >= 3
    assert np.mean(abs(np.array(gaps)) <= 0.25) >= 0.9


SRT_BLOCK = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)")


def srt_cues(srt: str) -> list[tuple[float, float, str]]:
    """The cues of an SRT file; fails unless every block is well formed and numbered in order."""
    cues = []
    for number, block in enumerate(srt.strip().split("\n\n"), 1):
        match = SRT_BLOCK.fullmatch(block.strip())
        assert match and int(match[1]) == number, block
        hours, minutes, seconds, millis = (int(x) for x in match.groups()[1:5])
        start = hours * 3600 + minutes * 60 + seconds + millis / 1000
        hours, minutes, seconds, millis = (int(x) for x in match.groups()[5:9])
        cues.append((start, hours * 3600 + minutes * 60 + seconds + millis / 1000, match[10]))
    return cues


@pytest.mark.parametrize("voice", ["jf_alpha", "joe"])
def test_the_captioned_route_answers_audio_words_and_subtitles(studio_client: TestClient, voice: str) -> None:
    text = "It was 40-60°C outside, so we stayed in. The hot afternoon went by slowly."
    response = studio_client.post(
        "/api/v1/tts/captioned", json={"text": text, "voice_id": voice, "format": "wav", "language": "en"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    audio, rate = sf.read(io.BytesIO(base64.b64decode(body["audio"])), dtype="float32")
    assert rate == body["sample_rate"] and abs(len(audio) / rate - body["duration"]) < 0.01
    assert 3.0 < body["duration"] < 12.0 and np.sqrt(np.mean(audio**2)) > 0.02
    words = body["words"]
    assert [w["word"] for w in words] == re.findall(r"[\w'°-]+", text)
    (range_word,) = [w for w in words if w["word"] == "40-60°C"]
    assert "forty" in range_word["spoken"] and "sixty" in range_word["spoken"]
    assert all(a["start"] <= b["start"] for a, b in itertools.pairwise(words))
    assert words[-1]["end"] <= body["duration"] + 0.01
    second = next(w for w in words if w["word"] == "The")
    assert second["start"] > range_word["end"] + 0.1  # after the first sentence and the gap
    cues = srt_cues(body["srt"])
    assert [cue[2] for cue in cues][:2] == ["It was 40-60°C outside,", "so we stayed in."]
    assert all(len(cue[2].split()) <= 7 and cue[1] - cue[0] <= 3.6 for cue in cues)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(cues))
    assert " ".join(cue[2] for cue in cues) == text

    again = studio_client.post(
        "/api/v1/tts/captioned", json={"text": text, "voice_id": voice, "format": "wav", "language": "en"}
    )
    assert (response.headers["X-Cache"], again.headers["X-Cache"]) == ("miss", "hit")
    assert again.json() == body  # the same audio, words and subtitles, from the cache


def test_the_captioned_route_refuses_what_the_speech_route_refuses(studio_client: TestClient) -> None:
    response = studio_client.post("/api/v1/tts/captioned", json={"text": "  ", "voice_id": "joe"})
    assert response.status_code == 422 and response.json()["error"]["code"]
    response = studio_client.post("/api/v1/tts/captioned", json={"text": "Hi.", "voice_id": "nobody"})
    assert response.status_code == 404
