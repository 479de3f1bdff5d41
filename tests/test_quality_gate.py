"""The quality gate with the real engines and the bundled ASR: a take cut short on purpose is heard
and made again, one cut every time is reported with its time, good takes pass first time, the
speech and dialogue tasks check every sentence when asked, and a resumed task keeps its checks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engines.base import SynthesisOptions
from studio.core import Studio
from studio.services.quality import DEFAULT_THRESHOLD, QualityGate, SentenceCheck, retake_options, summary
from studio.tasks.records import TaskStatus
from tests.conftest import make_settings, wait_for_task

SENTENCE = "The baker sells fresh bread every morning at seven."


@pytest.fixture(scope="module")
def studio(studio_client: TestClient):  # type: ignore[no-untyped-def]
    return studio_client.app.state.studio  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def spoken(studio) -> tuple[np.ndarray, int]:  # type: ignore[no-untyped-def]
    """SENTENCE as Kokoro's jf_alpha says it."""
    engine = studio.registry.loaded("kokoro")
    chunk = next(iter(engine.synthesize(SENTENCE, "jf_alpha", SynthesisOptions(language="en-us"))))
    return chunk.audio, chunk.sample_rate


def test_a_take_cut_short_is_heard_and_made_again(studio, spoken) -> None:  # type: ignore[no-untyped-def]
    audio, rate = spoken
    asked: list[int] = []

    def make(attempt: int) -> tuple[np.ndarray, int]:
        asked.append(attempt)
        return (audio[: int(0.4 * len(audio))] if attempt == 0 else audio), rate

    gate = QualityGate(studio.transcriber)
    kept, kept_rate, check = gate.take(4, SENTENCE, "en-us", make)
    assert asked == [0, 1]  # the whole take passed: no third
    assert kept is audio and kept_rate == rate
    assert (check.index, check.text, check.takes, check.passed) == (4, SENTENCE, 2, True)
    # What the ASR heard in the kept take is the whole sentence.
    assert check.error_rate == gate.error_rate(SENTENCE, check.heard, "en-us") <= 0.1
    assert "bread" in check.heard.lower() and "morning" in check.heard.lower()


def test_a_take_cut_every_time_fails_and_is_reported_with_its_time(studio, spoken) -> None:  # type: ignore[no-untyped-def]
    audio, rate = spoken
    gate = QualityGate(studio.transcriber, max_takes=2)
    _, _, check = gate.take(1, SENTENCE, "en-us", lambda attempt: (audio[: int(0.35 * len(audio))], rate))
    assert check.takes == 2 and not check.passed and check.error_rate > gate.threshold
    check.start = 3.25
    fine = SentenceCheck(0, "Hello there.", "Hello there.", 0.0, 1, True, 0.0)
    report = summary([fine, check])
    assert report["checked"] == 2 and report["retaken"] == 1 and report["threshold"] == DEFAULT_THRESHOLD
    assert report["failing"] == [
        {"index": 1, "text": SENTENCE, "heard": check.heard, "error_rate": check.error_rate, "start": 3.25}
    ]


def test_a_good_mandarin_take_passes_first_time(studio) -> None:  # type: ignore[no-untyped-def]
    engine = studio.registry.loaded("kokoro")
    text = "今天天气很好，我们去公园散步吧。"

    def make(attempt: int) -> tuple[np.ndarray, int]:
        options = retake_options(SynthesisOptions(language="zh"), attempt)
        chunk = next(iter(engine.synthesize(text, "jf_alpha", options)))
        return chunk.audio, chunk.sample_rate

    _, _, check = QualityGate(studio.transcriber).take(0, text, "zh", make)
    assert check.passed and check.takes == 1, check


def test_what_counts_as_wrong(studio) -> None:  # type: ignore[no-untyped-def]
    gate = QualityGate(studio.transcriber)
    assert gate.passes("Thank you.", gate.error_rate("Thank you.", "Thank you!", "en-us"), "en-us")
    assert gate.passes(
        "Yes, of course.", gate.error_rate("Yes, of course.", "Yes, of cause.", "en-us"), "en-us"
    )
    assert not gate.passes("Yes, of course.", gate.error_rate("Yes, of course.", "Yezovko", "en-us"), "en-us")
    assert not gate.passes("Thank you.", 1.0, "en-us")  # nothing heard right
    # Chinese is compared by sound: a homophone for a missed tone is no error, a missing syllable is.
    assert gate.error_rate("这本书我已经看了两遍。", "这份树窝已经看了两边", "zh") == 0.1
    assert gate.error_rate("他每天早上七点起床。", "他每天早上7点起床", "zh") == 0
    assert not gate.passes(
        "这本书我已经看了两遍。", gate.error_rate("这本书我已经看了两遍。", "这本书我已经", "zh"), "zh"
    )
    # Numbers and titles are compared as the studio spells them out.
    assert (
        gate.error_rate(
            "Dr. Smith will see you in 15 minutes.", "Doctor Smith will see you in fifteen minutes", "en-us"
        )
        == 0
    )


def test_retakes_vary_speed_and_piper_noise() -> None:
    base = SynthesisOptions(speed=1.0, language="en-us", extra={"noise_scale": 0.5})
    assert retake_options(base, 0) is base
    first, second = retake_options(base, 1), retake_options(base, 2)
    assert (first.speed, second.speed) == (0.96, 1.04)
    assert first.language == "en-us" and first.extra["noise_scale"] < 0.5  # the user's own, lowered
    assert second.extra["noise_w_scale"] < first.extra["noise_w_scale"] < 0.8  # Piper's default, lowered
    assert base.extra == {"noise_scale": 0.5}  # the caller's options are left alone


def test_speech_task_checks_every_sentence(studio_client: TestClient) -> None:
    text = (
        "The museum opens at nine. We walked slowly through the quiet garden. It was 40 degrees in the shade."
    )
    created = studio_client.post(
        "/api/v1/task/create",
        # Kokoro: the same take every run (Piper's VITS noise makes each take new, and one in many is
        # misheard and rightly made again, which would make "no retake" a matter of luck).
        json={"kind": "speech", "config": {"text": text, "voice": "jm_kumo", "quality_check": True}},
    )
    assert created.status_code == 200, created.text
    task = wait_for_task(studio_client, created.json()["task_id"], timeout=180)
    assert task["status"] == "completed", task["error_message"]
    quality = task["result"]["quality"]
    assert (quality["checked"], quality["retaken"], quality["failing"]) == (3, 0, [])  # good takes pass
    assert "quality.json" in task["files"]
    report = studio_client.get(f"/api/v1/task/{task['task_id']}/files/download/quality.json").json()
    sentences = report["sentences"]
    assert [s["index"] for s in sentences] == [0, 1, 2] and all(s["passed"] for s in sentences)
    assert sentences[0]["start"] == 0.0 and 0 < sentences[1]["start"] < sentences[2]["start"]
    assert "40" in sentences[2]["text"]  # compared as "forty", whichever way Whisper writes it


def test_dialogue_task_checks_every_sentence(studio_client: TestClient) -> None:
    script = "[S1] Good morning, Sam. Did you sleep well?\n[S2] Not really, the neighbours had a party."
    response = studio_client.post(
        "/api/v1/dialogue",
        json={
            "script": script,
            "voices": {"S1": "jm_kumo", "S2": "joe"},
            "quality_check": True,
            "wait": True,
        },
    )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed", task["error_message"]
    quality = task["result"]["quality"]
    assert quality["checked"] == 3 and quality["failing"] == [], quality
    report = json.loads(
        studio_client.get(f"/api/v1/task/{task['task_id']}/files/download/quality.json").content
    )
    timing = studio_client.get(f"/api/v1/task/{task['task_id']}/files/download/timing.json").json()
    sentences = report["sentences"]
    assert [(s["index"], s["turn"], s["speaker"]) for s in sentences] == [
        (0, 0, "S1"),
        (1, 0, "S1"),
        (2, 1, "S2"),
    ]
    assert sentences[0]["start"] == timing[0]["start"] < sentences[1]["start"] < timing[0]["end"]
    assert sentences[2]["start"] == timing[1]["start"]


def test_a_resumed_speech_task_does_not_hear_finished_sentences_again(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    studio = Studio(settings)
    studio.start()
    text = "One small step. Then another one. The path climbs the hill. We reach the top at noon."
    config = {"text": text, "voice": "joe", "quality_check": True}
    task = studio.runner.submit("speech", "checked", config)
    parts = studio.store.folder(task.task_id) / "_parts"
    while not list(parts.glob("0*.wav")):
        time.sleep(0.01)
    studio.runner._stopping = True  # like a killed process: the worker stops at its next check
    studio.runner._cancel_event(task.task_id).set()
    studio.runner.wait(task.task_id, timeout=0.1)
    studio.store.update(task.task_id, status=TaskStatus.RUNNING)  # what a crash leaves in the database
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("0*.json")}
    assert kept and len(kept) < 4  # each finished part has its check beside it

    restarted = Studio(settings)  # a new process on the same data folder
    restarted.start()
    resumed = restarted.runner.wait(task.task_id, timeout=120)
    assert resumed.status == TaskStatus.COMPLETED, resumed.error_message
    assert all((parts / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())
    assert resumed.result["quality"]["checked"] == 4 and resumed.result["quality"]["failing"] == []
    restarted.stop()
