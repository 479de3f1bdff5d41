"""Pronunciation control, heard: the lexicon and inline marks change the phonemes the engine gets and
what the bundled ASR hears; pauses and breaks are silence where they are written; SSML's prosody and
sub do what they say; broken SSML is a 422 naming the place; the lexicon survives a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from studio.audio import decode
from studio.core import Studio
from studio.errors import BadInput
from studio.services.pronunciation import Segment, speech_segments
from studio.services.speech import SpeechRequest
from tests.conftest import make_settings, wait_for_task

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<speak>&lol9;</speak>"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A studio of this module's own: its lexicon entries do not reach other modules' speech."""
    from studio.server import create_app

    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("pronunciation")))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def studio(client: TestClient) -> Studio:
    return client.app.state.studio  # type: ignore[attr-defined]


def spoken(studio: Studio, text: str, voice: str) -> tuple[str, np.ndarray, int]:
    """The phonemes the engine spoke (chunks joined by " | ") and the audio, from `SpeechService.stream`."""
    chunks = list(studio.speech.stream(SpeechRequest(text, voice=voice, language="en-us")))
    phonemes = " | ".join("".join(span.phoneme for span in chunk.phonemes) for chunk in chunks)
    return phonemes, np.concatenate([chunk.audio for chunk in chunks]), chunks[0].sample_rate


def speech(client: TestClient, text: str, voice: str = "joe") -> tuple[np.ndarray, int]:
    response = client.post("/api/v1/tts/synthesize", json={"text": text, "voice_id": voice, "format": "wav"})
    assert response.status_code == 200, response.text
    return decode(response.content)


def quiet_runs(audio: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch whose 10 ms frames are all below 1% of the peak."""
    frame = rate // 100
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    quiet = np.sqrt(np.mean(frames**2, axis=1)) < 0.01 * np.abs(audio).max()
    runs, start = [], None
    for i, silent in enumerate([*quiet, False]):
        if silent and start is None:
            start = i
        elif not silent and start is not None:
            runs.append((start / 100, i / 100))
            start = None
    return runs


def test_markup_and_ssml_become_segments() -> None:
    assert speech_segments("Say [Nguyen](/wˈɪn/) now. [pause:1.5s] Then [pause:500ms] go.") == [
        Segment("Say Nguyen now.", 1.0, 1.5, {"nguyen": "wˈɪn"}),
        Segment("Then", 1.0, 0.5),
        Segment("go."),
    ]
    ssml = (
        '<speak version="1.0">Hi <break time="1500ms"/> <prosody rate="slow">slow <break strength="weak"/>'
        ' part</prosody> <sub alias="World Health Organization">WHO</sub> and '
        '<phoneme alphabet="ipa" ph="təmˈɑːtoʊ">tomato</phoneme> <prosody rate="150%">fast</prosody></speak>'
    )
    assert speech_segments(ssml) == [
        Segment("Hi", 1.0, 1.5),
        Segment("slow", 0.75, 0.5),
        Segment("part", 0.75),
        Segment("World Health Organization and tomato", 1.0, 0.0, {"tomato": "təmˈɑːtoʊ"}),
        Segment("fast", 1.5),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "<speak>Hi <emphasis>there</emphasis> <say-as>1</say-as></speak>",
            "<emphasis> (line 1, column 11), <say-as>",
        ),
        ('<speak>Hi\n  <break time="soon"/></speak>', "line 2, column 3: <break> time 'soon'"),
        ('<speak><prosody rate="zippy">a</prosody></speak>', "line 1, column 8: <prosody> rate 'zippy'"),
        ("<speak>Hi <sub>x</sub></speak>", "line 1, column 11: <sub> needs alias"),
        ('<speak><phoneme ph="a b">New York</phoneme></speak>', "line 1, column 8: <phoneme> ph"),
        ("<speak>Hi there", "line 1, column 16: no element found"),
        ("<speak>Hi & bye</speak>", "line 1, column 12: not well-formed"),
        ("Wait [pause:forever] now", "character 6: a broken mark"),
        ("[pause:11s] too long", "longer than 10 s"),
    ],
)
def test_broken_markup_is_refused_naming_the_place(text: str, says: str) -> None:
    with pytest.raises(BadInput) as refused:
        speech_segments(text)
    assert says in refused.value.message


def test_malformed_ssml_and_billion_laughs_are_422_on_both_speech_routes(client: TestClient) -> None:
    broken = '<speak>Hello <break time="1500ms">there</speak>'
    for route, body in (
        ("/v1/audio/speech", {"input": broken, "voice": "joe", "response_format": "wav"}),
        ("/api/v1/tts/synthesize", {"text": broken, "voice_id": "joe"}),
    ):
        response = client.post(route, json=body)
        assert response.status_code == 422, response.text
        assert "line 1, column 42: mismatched tag" in response.json()["error"]["message"]
    laughs = client.post("/v1/audio/speech", json={"input": BILLION_LAUGHS, "voice": "joe"})
    assert laughs.status_code == 422 and "DOCTYPE" in laughs.json()["error"]["message"]
    assert client.get("/health").json()["status"] == "healthy"


def test_lexicon_and_inline_marks_change_the_phonemes_and_what_is_heard(
    client: TestClient,
    studio: Studio,
    transcriber,  # type: ignore[no-untyped-def]
) -> None:
    text = "Say Nguyen again."
    default, audio, rate = spoken(studio, text, "jf_alpha")
    assert "nˈuːjɛn" in default and "win" not in transcriber.transcribe(audio, rate, "en").text.lower()
    answer = client.put("/api/v1/pronunciations/Nguyen", json={"language": "en", "phonemes": "wˈɪn"})
    assert answer.status_code == 200 and answer.json()["word"] == "nguyen"
    fixed, audio, rate = spoken(studio, text, "jf_alpha")
    assert "wˈɪn" in fixed and "nˈuːjɛn" not in fixed
    assert "win" in transcriber.transcribe(audio, rate, "en").text.lower()
    piper, _, _ = spoken(studio, text, "joe")
    assert "wˈɪn" in piper and "nˈuːjɛn" not in piper
    for voice in ("jf_alpha", "joe"):
        inline, _, _ = spoken(studio, "A [tomato](/təmˈɑːtoʊ/).", voice)
        assert "təmˈɑːtoʊ" in inline and "təmˈeɪɾoʊ" not in inline, voice


def test_a_speech_task_says_the_lexicon_words_its_way_too(
    client: TestClient,
    transcriber,  # type: ignore[no-untyped-def]
) -> None:
    """Long text runs as a task that calls the engine itself: the lexicon applies there as well."""
    assert (
        client.put("/api/v1/pronunciations/Qxvb", json={"language": "en", "respelling": "Bob"}).status_code
        == 200
    )
    created = client.post(
        "/api/v1/task/create", json={"kind": "speech", "config": {"text": "Ask Qxvb now.", "voice": "joe"}}
    )
    assert created.status_code == 200, created.text
    task = wait_for_task(client, created.json()["task_id"], timeout=120)
    assert task["status"] == "completed", task["error_message"]
    made = client.get(f"/api/v1/task/{task['task_id']}/files/download/speech.wav")
    assert "bob" in transcriber.transcribe(*decode(made.content), "en").text.lower()


def test_a_respelling_is_said_instead_and_new_entries_are_not_served_from_the_cache(
    client: TestClient,
    transcriber,  # type: ignore[no-untyped-def]
) -> None:
    before = client.post("/api/v1/tts/synthesize", json={"text": "Meet Xqzt today.", "voice_id": "joe"})
    again = client.post("/api/v1/tts/synthesize", json={"text": "Meet Xqzt today.", "voice_id": "joe"})
    assert (before.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert (
        client.put("/api/v1/pronunciations/xqzt", json={"language": "en-us", "respelling": "Bob"}).status_code
        == 200
    )
    after = client.post("/api/v1/tts/synthesize", json={"text": "Meet Xqzt today.", "voice_id": "joe"})
    assert after.headers["x-cache"] == "miss"
    assert "bob" in transcriber.transcribe(*decode(after.content), "en").text.lower()


@pytest.mark.parametrize(
    "text",
    [
        "Red green blue. [pause:1.5s] Black and white.",
        '<speak>Red green blue. <break time="1500ms"/> Black and white.</speak>',
    ],
)
def test_a_pause_is_silence_where_it_is_written(
    client: TestClient,
    text: str,
    transcriber,  # type: ignore[no-untyped-def]
) -> None:
    audio, rate = speech(client, text)
    start, end = max(quiet_runs(audio, rate), key=lambda run: run[1] - run[0])
    assert end - start >= 1.4 and start > 0.5 and end < len(audio) / rate - 0.5
    before = transcriber.transcribe(audio[: int(start * rate)], rate, "en").text.lower()
    assert "blue" in before and "black" not in before


def test_a_pause_at_the_end_is_kept_after_the_last_words(client: TestClient) -> None:
    plain, rate = speech(client, "Red green blue.")
    paused, _ = speech(client, "Red green blue. [pause:2s]")
    tail = int(2.0 * rate)
    assert np.abs(paused[-tail:]).max() == 0.0 and np.abs(paused[:-tail]).max() > 0.1  # words, then 2 s
    assert abs((len(paused) - len(plain)) / rate - 2.0) < 0.2


def test_prosody_slows_its_part_and_sub_is_said_as_its_alias(
    client: TestClient,
    transcriber,  # type: ignore[no-untyped-def]
) -> None:
    plain, rate = speech(client, "<speak>Bring the red box here.</speak>")
    slow, _ = speech(client, '<speak><prosody rate="x-slow">Bring the red box here.</prosody></speak>')
    assert len(slow) > 1.2 * len(plain)
    alias, rate = speech(client, '<speak>The <sub alias="World Health Organization">WHO</sub> met.</speak>')
    assert "world health organization" in transcriber.transcribe(alias, rate, "en").text.lower()


def test_lexicon_crud_over_rest_survives_a_restart(tmp_path: Path) -> None:
    from studio.server import create_app

    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as first:
        for word, body in (
            ("tomato", {"language": "en-gb", "phonemes": "təmˈɑːtəʊ"}),
            ("Nguyen", {"language": "en", "respelling": "win"}),
            ("gone", {"language": "en", "respelling": "went"}),
        ):
            assert first.put(f"/api/v1/pronunciations/{word}", json=body).status_code == 200
        assert (
            first.delete("/api/v1/pronunciations/gone", params={"language": "en"}).json()["deleted"] is True
        )
        assert (
            first.put(
                "/api/v1/pronunciations/two words", json={"language": "en", "respelling": "x"}
            ).status_code
            == 422
        )
        assert first.put("/api/v1/pronunciations/nothing", json={"language": "en"}).status_code == 422
    with TestClient(create_app(settings)) as second:
        entries = second.get("/api/v1/pronunciations").json()["pronunciations"]
        assert [(e["word"], e["language"], e["phonemes"], e["respelling"]) for e in entries] == [
            ("nguyen", "en", None, "win"),
            ("tomato", "en-gb", "təmˈɑːtəʊ", None),
        ]
        assert [
            e["word"] for e in second.get("/api/v1/pronunciations?language=en-gb").json()["pronunciations"]
        ] == ["tomato"]
        assert (
            second.delete("/api/v1/pronunciations/gone", params={"language": "en"}).json()["deleted"] is False
        )
