"""Dialogue end to end: one mixed track whose subtitles and turns hold the right words and voices."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from studio.core import Studio
from studio.services.asr import word_error_rate
from studio.services.speaker import SpeakerEncoder, similarity
from studio.tasks.store import TaskStatus
from tests.conftest import ROOT, make_settings

THREE_SPEAKERS = """Alice: Good morning everyone, and welcome to the weekly meeting.
Bob: Thanks Alice. I have the sales numbers from last month ready.
Carol: Before we start, could somebody open the window please?
Alice: Of course. Bob, please go ahead with the numbers.
Bob: Sales grew in every region except the north.
Carol: That is good news for the whole team."""


@pytest.fixture(scope="module")
def finished(studio_client: TestClient) -> dict:
    response = studio_client.post(
        "/api/v1/dialogue",
        json={
            "script": THREE_SPEAKERS,
            "voices": {"Bob": "joe"},
            "format": "mp3",
            "pause_ms": 400,
            "wait": True,
        },
    )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed", task
    return task


def download(client: TestClient, task: dict, name: str) -> bytes:
    response = client.get(f"/api/v1/task/{task['task_id']}/files/download/{name}")
    assert response.status_code == 200, name
    return response.content


def test_one_track_with_subtitles_timing_and_stems(studio_client: TestClient, finished: dict) -> None:
    names = set(finished["files"])
    assert {
        "dialogue.wav",
        "dialogue.mp3",
        "dialogue.srt",
        "dialogue.vtt",
        "timing.json",
        "turns.zip",
    } <= names
    assert {"stems/S1.wav", "stems/S2.wav", "stems/S3.wav"} <= names
    mix, rate = sf.read(io.BytesIO(download(studio_client, finished, "dialogue.wav")), dtype="float32")
    timing = json.loads(download(studio_client, finished, "timing.json"))
    assert [t["label"] for t in timing] == ["Alice", "Bob", "Carol", "Alice", "Bob", "Carol"]
    assert [t["speaker"] for t in timing] == ["S1", "S2", "S3", "S1", "S2", "S3"]
    assert timing[1]["voice"] == "joe" and timing[0]["voice"] != timing[2]["voice"]  # distinct defaults
    assert abs(len(mix) / rate - timing[-1]["end"]) < 0.05
    assert all(b["start"] - a["end"] == pytest.approx(0.4, abs=0.01) for a, b in itertools.pairwise(timing))
    for turn in timing:  # Kokoro and Piper (Bob's joe) both give phoneme times, in the mix's seconds
        spans = turn["phonemes"]
        assert spans and all(turn["start"] <= t0 <= t1 <= turn["end"] + 0.002 for _, t0, t1 in spans), turn
    assert "m" in [ph for ph, _, _ in timing[1]["phonemes"]]  # Bob: "... numbers from last month ready."
    assert "m" in [ph for ph, _, _ in timing[0]["phonemes"]]  # Alice: "Good morning everyone, ..."

    srt = download(studio_client, finished, "dialogue.srt").decode()
    cue_texts = [block.split("\n")[2] for block in srt.strip().split("\n\n")]
    assert cue_texts[0].startswith("[Alice] Good morning everyone")
    assert all(t.startswith(("[Alice] ", "[Bob] ", "[Carol] ")) for t in cue_texts)

    for speaker in ("S1", "S2", "S3"):  # each stem holds its speaker's turns and silence elsewhere
        stem, _ = sf.read(
            io.BytesIO(download(studio_client, finished, f"stems/{speaker}.wav")), dtype="float32"
        )
        assert len(stem) == len(mix)
        for turn in timing:
            part = stem[int(turn["start"] * rate) : int(turn["end"] * rate)]
            loud = np.sqrt(np.mean(part**2)) > 0.02
            assert loud == (turn["speaker"] == speaker)
    with zipfile.ZipFile(io.BytesIO(download(studio_client, finished, "turns.zip"))) as turns:
        assert len(turns.namelist()) == 6 and turns.namelist()[1] == "0002_S2.wav"


@pytest.mark.slow
def test_each_turn_says_its_words_at_its_time(studio_client: TestClient, finished: dict, transcriber) -> None:  # type: ignore[no-untyped-def]
    mix, rate = sf.read(io.BytesIO(download(studio_client, finished, "dialogue.wav")), dtype="float32")
    for turn in json.loads(download(studio_client, finished, "timing.json")):
        segment = mix[int(turn["start"] * rate) : int(turn["end"] * rate)]
        heard = transcriber.transcribe(segment, rate).text
        assert word_error_rate(turn["text"], heard) <= 0.3, (turn["text"], heard)


def test_speakers_sound_different(studio_client: TestClient, finished: dict) -> None:
    mix, rate = sf.read(io.BytesIO(download(studio_client, finished, "dialogue.wav")), dtype="float32")
    encoder = SpeakerEncoder()
    timing = json.loads(download(studio_client, finished, "timing.json"))
    embeddings = [
        (t["speaker"], encoder.embed(mix[int(t["start"] * rate) : int(t["end"] * rate)], rate))
        for t in timing
    ]
    within = [
        similarity(a, b) for i, (s, a) in enumerate(embeddings) for t, b in embeddings[i + 1 :] if s == t
    ]
    across = [
        similarity(a, b) for i, (s, a) in enumerate(embeddings) for t, b in embeddings[i + 1 :] if s != t
    ]
    assert min(within) > max(across), (within, across)


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("", "empty"),
        ("[S1] Hello there.\n[S2]\n[S1] Bye.", "line 2"),
        ("[S6] Hello.", "line 1"),
        ("A: one\nB: two\nC: three\nD: four\nE: five\nF: six", "line 6"),
    ],
)
def test_malformed_scripts_are_rejected_with_the_line(
    studio_client: TestClient, script: str, fragment: str
) -> None:
    response = studio_client.post("/api/v1/dialogue", json={"script": script})
    assert response.status_code == 422 and fragment in response.json()["error"]["message"]


def test_bad_voices_are_rejected_before_a_task_exists(studio_client: TestClient) -> None:
    before = len(studio_client.get("/api/v1/tasks").json()["tasks"])
    unknown_speaker = studio_client.post(
        "/api/v1/dialogue", json={"script": "A: hi\nB: yo", "voices": {"Zed": "joe"}}
    )
    assert unknown_speaker.status_code == 422 and "Zed" in unknown_speaker.json()["error"]["message"]
    unknown_voice = studio_client.post(
        "/api/v1/dialogue", json={"script": "A: hi\nB: yo", "voices": {"A": "ghost"}}
    )
    assert unknown_voice.status_code == 404
    assert len(studio_client.get("/api/v1/tasks").json()["tasks"]) == before


def test_a_turn_the_voice_cannot_read_is_left_silent_not_a_failed_task(studio_client: TestClient) -> None:
    script = "[S1] Hello there.\n[S2] ١٢٣\n[S1] Goodbye now."  # Arabic-Indic digits: no phonemes
    task = studio_client.post("/api/v1/dialogue", json={"script": script, "wait": True}).json()
    assert task["status"] == "completed", task["error_message"]
    srt = download(studio_client, task, "dialogue.srt").decode()
    assert "Hello there." in srt and "Goodbye now." in srt and "١" not in srt
    log = studio_client.get(f"/api/v1/task/{task['task_id']}/logs").text
    assert "turn 2 (S2): nothing the voice can read; left silent" in log


def long_script(turns: int) -> str:
    return "\n".join(
        f"[S{1 + i % 2}] This is turn number {i + 1}, and it carries a few more words to speak."
        for i in range(turns)
    )


def test_long_dialogue_resumes_after_a_restart_without_redoing_turns(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    studio = Studio(settings)
    studio.start()
    task = studio.runner.submit("dialogue", "long", {"script": long_script(12), "voices": {"S2": "joe"}})
    turns = studio.store.folder(task.task_id) / "_turns"
    while len(list(turns.glob("*.json"))) < 4:
        time.sleep(0.02)
    progress = studio.store.get(task.task_id)
    assert progress is not None and progress.progress > 0 and progress.current_step.startswith("turn ")
    studio.runner._stopping = True  # the server goes away mid-task
    studio.runner._cancel_event(task.task_id).set()
    studio.runner.wait(task.task_id, timeout=0.1)
    studio.store.update(task.task_id, status=TaskStatus.RUNNING)
    kept = {p.name: p.stat().st_mtime_ns for p in turns.glob("*.wav") if p.with_suffix(".json").exists()}
    assert len(kept) >= 4

    restarted = Studio(settings)
    restarted.start()
    done = restarted.runner.wait(task.task_id, timeout=300)
    assert done.status == TaskStatus.COMPLETED and done.result["turns"] == 12
    assert all((turns / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())
    assert f"kept {len(kept)} turn(s)" in restarted.store.read_log(task.task_id)
    restarted.stop()


def test_cancel_stops_a_dialogue_promptly(tmp_path: Path) -> None:
    studio = Studio(make_settings(tmp_path))
    studio.start()
    task = studio.runner.submit("dialogue", "long", {"script": long_script(40)})
    turns = studio.store.folder(task.task_id) / "_turns"
    while not list(turns.glob("*.json")):
        time.sleep(0.02)
    studio.runner.cancel(task.task_id)
    assert studio.runner.wait(task.task_id, timeout=60).status == TaskStatus.CANCELLED
    # It stopped at the next sentence, not at the end: most of the 40 turns were never made.
    assert len(list(turns.glob("*.json"))) < 10
    studio.stop()


@pytest.mark.slow
def test_batch_processes_mixed_lines_and_reports_failures(tmp_path: Path) -> None:
    moss_example = ROOT.parent / "shared" / "data" / "moss-ttsd-examples-only-text.jsonl"
    lines = [
        json.dumps(
            {"text": "Alice: Hello Bob.\nBob: Hello Alice, nice to see you.", "voice_speaker2": "joe"}
        ),
        "{ this line is not json",
        json.dumps(
            {"text": "[S1] Hi. [S2] Hi.", "prompt_audio_speaker1": "missing.wav", "prompt_text_speaker1": "x"}
        ),
        json.dumps({"text": "Speaker 1: I paid $5 for 3 apples.\nSpeaker 2: That is 50% too much."}),
    ]
    if moss_example.exists():
        lines.append(moss_example.read_text(encoding="utf-8").strip().splitlines()[0])
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    env = {"STUDIO_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    command = [
        sys.executable,
        "-m",
        "studio.batch",
        "--jsonl",
        str(jsonl),
        "--output_dir",
        str(out),
        "--use_normalize",
    ]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["succeeded"] == len(lines) - 2
    errors = {line["line"]: line["error"] for line in summary["lines"] if not line["ok"]}
    assert "not valid JSON" in errors[2] and "missing.wav" in errors[3]
    assert "line 3: " in run.stdout and "2 failed" in run.stdout
    srt = (out / "line_0004" / "dialogue.srt").read_text()
    assert "[S1] I paid $5 for 3 apples." in srt  # subtitles keep the words as written
    if moss_example.exists():
        timing = json.loads((out / "line_0005" / "timing.json").read_text())
        assert len(timing) == 7 and [t["speaker"] for t in timing[:2]] == ["S1", "S2"]

    limited = subprocess.run(
        [*command[:-1], "--max_samples", "1", "--output_dir", str(tmp_path / "one")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (
        limited.returncode == 0
        and json.loads((tmp_path / "one" / "summary.json").read_text())["succeeded"] == 1
    )
