"""Task store and runner: real speech tasks, cancel, restart recovery, file safety, the task routes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from engines.gpu import GpuAllocator, GpuDevice
from studio.audio import decode
from studio.core import Studio
from studio.errors import BadInput, Conflict
from studio.tasks.configs import StepwiseConfig
from studio.tasks.runner import StepSkipped, TaskContext, TaskFailed, TaskKind, TaskRunner
from studio.tasks.store import Task, TaskStatus, TaskStore
from tests.conftest import make_settings, wait_for_task

LONG_TEXT = " ".join(f"This is sentence number {n} of the story." for n in range(1, 9))


def test_speech_task_through_the_task_routes(studio_client: TestClient) -> None:
    created = studio_client.post(
        "/api/v1/task/create",
        json={
            "task_name": "story",
            "config": {"kind": "speech", "text": LONG_TEXT, "voice": "joe", "format": "mp3"},
        },
    ).json()
    assert created["status"] in ("pending", "running") and created["kind"] == "speech"
    task = wait_for_task(studio_client, created["task_id"])
    assert task["status"] == "completed" and task["progress"] == 100
    assert {"speech.mp3", "speech.srt", "timing.json"} <= set(task["files"])
    assert not any(name.startswith("_parts") for name in task["files"])  # working files stay private

    base = f"/api/v1/task/{task['task_id']}"
    audio, rate = decode(studio_client.get(f"{base}/files/download/speech.mp3").content)
    assert abs(len(audio) / rate - task["result"]["duration"]) < 0.2
    srt = studio_client.get(f"{base}/files/download/speech.srt").text
    assert srt.count(" --> ") == 8 and "sentence number 8" in srt
    logs = studio_client.get(f"{base}/logs").text
    assert "started" in logs and "completed" in logs
    assert any(t["task_id"] == task["task_id"] for t in studio_client.get("/api/v1/tasks").json()["tasks"])

    assert studio_client.delete(base).json()["status"] == "deleted"
    assert studio_client.get(base).status_code == 404


def test_task_route_errors(studio_client: TestClient) -> None:
    response = studio_client.post("/api/v1/task/create", json={"config": {"kind": "alchemy"}})
    assert response.status_code == 422 and "speech" in response.json()["error"]["message"]
    assert studio_client.get("/api/v1/task/0123456789abcdef").status_code == 404
    assert studio_client.get("/api/v1/task/..%2F..%2Fetc").status_code == 404
    # A task's config is checked when the task is made: what is wrong is a 4xx, not a failed task.
    refused = {
        ("nobody", 1.0): (404, "unknown_voice", "unknown voice 'nobody'"),
        ("joe", 9.0): (422, "bad_speed", "config.speed: Input should be less than or equal to 4"),
        ("joe", "fast"): (422, "bad_speed", "config.speed: Input should be a valid number"),
    }
    for (voice, speed), (status, code, message) in refused.items():
        config = {"text": "hi", "voice": voice, "speed": speed}
        response = studio_client.post("/api/v1/task/create", json={"kind": "speech", "config": config})
        error = response.json()["error"]
        assert (response.status_code, error["code"]) == (status, code) and message in error["message"], error
    typo = studio_client.post("/api/v1/task/create", json={"kind": "speech", "config": {"txt": "hi"}})
    assert typo.status_code == 422 and "config.txt: Extra inputs are not permitted" in typo.text
    made = studio_client.post(
        "/api/v1/task/create", json={"kind": "speech", "config": {"text": "hi", "voice": "alloy"}}
    ).json()
    assert made["config"]["voice"] == "jf_alpha" and made["config"]["engine"] == "kokoro"  # stored planned
    task = wait_for_task(studio_client, made["task_id"])
    step = studio_client.post(f"/api/v1/task/{task['task_id']}/step/train_gpt", json={"params": {}})
    assert step.status_code == 409 and "runs as a whole" in step.json()["error"]["message"]


def test_uploads_stay_inside_the_task_folder(studio_client: TestClient) -> None:
    task = studio_client.post(
        "/api/v1/task/create", json={"kind": "speech", "config": {"text": "Hi.", "voice": "joe"}}
    ).json()
    base = f"/api/v1/task/{task['task_id']}"
    hostile = {"file": ("../../../../etc/passwd", b"root:x:0:0", "text/plain")}
    uploaded = studio_client.post(f"{base}/files/upload", files=hostile).json()
    assert uploaded["filename"] == "inputs/passwd"
    folder = Path(studio_client.app.state.studio.store.folder(task["task_id"]))
    assert (folder / "inputs" / "passwd").read_bytes() == b"root:x:0:0"
    assert studio_client.get(f"{base}/files/download/inputs/passwd").content == b"root:x:0:0"
    for sneaky in ["../tasks.db", "..%2F..%2Ftasks.db", "%2Fetc%2Fpasswd", "task.log"]:
        assert studio_client.get(f"{base}/files/download/{sneaky}").status_code == 404, sneaky
    assert studio_client.post(f"{base}/files/upload", files={}).status_code == 422
    assert studio_client.get("/health").status_code == 200


def test_upload_size_limit(tmp_path: Path) -> None:
    from studio.server import create_app

    with TestClient(create_app(make_settings(tmp_path, max_upload_mb=1))) as client:
        task = client.post(
            "/api/v1/task/create", json={"kind": "speech", "config": {"text": "Hi.", "voice": "joe"}}
        ).json()
        big = {"file": ("big.wav", b"\0" * (2 * 2**20), "audio/wav")}
        response = client.post(f"/api/v1/task/{task['task_id']}/files/upload", files=big)
        assert response.status_code == 413 and "1 MB" in response.json()["error"]["message"]


def slow_kind(seconds: float) -> TaskKind:
    def run(context: TaskContext) -> dict:
        for i in range(int(seconds * 10)):
            context.progress(100 * i / (seconds * 10), f"tick {i}")
            context.wait(0.1)
        return {"ticks": int(seconds * 10)}

    return TaskKind("slow", run)


def test_cancel_stops_a_running_task_promptly_and_releases_its_gpus(tmp_path: Path) -> None:
    allocator = GpuAllocator([GpuDevice(0, "A", 10_000, 10_000)])

    def run(context: TaskContext) -> dict:
        context.lease(1, exclusive=True)
        while True:
            context.progress(50, "holding the GPU")
            context.wait(0.05)

    runner = TaskRunner(TaskStore(tmp_path), allocator)
    runner.register(TaskKind("gpu-job", run))
    runner.start()
    task = runner.submit("gpu-job", "holder", {})
    while runner.store.get(task.task_id).status != TaskStatus.RUNNING:  # type: ignore[union-attr]
        time.sleep(0.02)
    time.sleep(0.2)
    assert allocator.leases()
    started = time.monotonic()
    runner.cancel(task.task_id)
    done = runner.wait(task.task_id, timeout=5)
    assert done.status == TaskStatus.CANCELLED and time.monotonic() - started < 1.0
    assert allocator.leases() == []
    assert "released 1 device lease" in runner.store.read_log(task.task_id)
    runner.stop()


def test_failures_carry_the_real_reason(tmp_path: Path) -> None:
    def run(context: TaskContext) -> dict:
        raise MemoryError("CUDA out of memory: tried to allocate 20 GiB")

    runner = TaskRunner(TaskStore(tmp_path), GpuAllocator([]))
    runner.register(TaskKind("oom", run))
    runner.start()
    task = runner.wait(runner.submit("oom", "x", {}).task_id, timeout=5)
    assert task.status == TaskStatus.FAILED and "out of memory" in task.error_message
    assert "MemoryError" in runner.store.read_log(task.task_id)  # the trace is in the log, not the API
    runner.stop()


def test_pending_tasks_cancel_at_once_and_queue_positions(tmp_path: Path) -> None:
    runner = TaskRunner(TaskStore(tmp_path), GpuAllocator([]))
    runner.register(slow_kind(0.5))
    runner.start()
    first, second, third = (runner.submit("slow", f"t{i}", {}) for i in range(3))
    time.sleep(0.1)
    assert runner.queue_position(second.task_id) == 1 and runner.queue_position(third.task_id) == 2
    assert runner.queue_positions() == {second.task_id: 1, third.task_id: 2}  # the running one is not waiting
    assert runner.cancel(third.task_id).status == TaskStatus.CANCELLED
    assert runner.wait(second.task_id, timeout=5).status == TaskStatus.COMPLETED
    assert runner.store.get(third.task_id).status == TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert runner.store.get(first.task_id).progress == 100  # type: ignore[union-attr]
    runner.stop()


def test_restart_resumes_speech_without_redoing_sentences_and_keeps_finished_work(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    studio = Studio(settings)
    studio.start()
    done = studio.runner.submit("speech", "done before", {"text": "Finished work.", "voice": "joe"})
    assert studio.runner.wait(done.task_id, timeout=60).status == TaskStatus.COMPLETED

    # A long task runs until some sentences are on disk, then the server goes away mid-task.
    task = studio.runner.submit("speech", "long", {"text": LONG_TEXT, "voice": "joe", "format": "wav"})
    parts = studio.store.folder(task.task_id) / "_parts"
    while len(list(parts.glob("0*.wav"))) < 3:
        time.sleep(0.01)
    studio.runner._stopping = True  # like a killed process: the worker stops at its next check
    studio.runner._cancel_event(task.task_id).set()
    studio.runner.wait(task.task_id, timeout=0.1)
    studio.store.update(task.task_id, status=TaskStatus.RUNNING)  # what a crash leaves in the database
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("0*.wav")}

    restarted = Studio(settings)  # a new process on the same data folder
    restarted.start()
    resumed = restarted.runner.wait(task.task_id, timeout=120)
    assert resumed.status == TaskStatus.COMPLETED and resumed.result["sentences"] == 8
    assert all((parts / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())
    assert "resuming" in restarted.store.read_log(task.task_id)
    assert restarted.store.get(done.task_id).status == TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert "speech.wav" in restarted.store.files(done.task_id)
    restarted.stop()


def test_restart_marks_non_resumable_running_tasks_interrupted(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    task = store.create("slow", "t", {})
    store.update(task.task_id, status=TaskStatus.RUNNING)
    runner = TaskRunner(store, GpuAllocator([]))
    runner.register(slow_kind(0.1))
    runner.start()
    recovered = store.get(task.task_id)
    assert recovered is not None and recovered.status == TaskStatus.FAILED
    assert "interrupted by a server restart" in recovered.error_message
    assert "interrupted" in store.read_log(task.task_id)
    runner.stop()


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "", "x.y"])
def test_store_never_builds_paths_from_bad_ids(tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(KeyError):
        TaskStore(tmp_path).folder(bad_id)


def stepwise_kind(calls: list[tuple[str, dict]]) -> TaskKind:
    """Three steps: 'prepare' writes a file, 'check' is skipped unless asked, 'train' ticks until
    cancelled or `params['ticks']` are done and fails on request; 'train' needs 'prepare'."""

    def run_step(context: TaskContext, step: str, params: dict) -> dict:
        calls.append((step, params))
        if step == "prepare":
            (context.folder / "prepared.txt").write_text("ok")
            return {"prepared": True}
        if step == "check" and not params.get("enabled"):
            raise StepSkipped("checking is off")
        if params.get("fail"):
            raise TaskFailed("trainer exited: out of memory")
        ticks = int(params.get("ticks", 3))
        for tick in range(ticks):
            context.step_progress(tick / ticks)
            context.wait(0.05)
        return {"ticks": ticks}

    return TaskKind(
        "steps",
        config=StepwiseConfig,
        resumable=True,
        steps=("prepare", "check", "train"),
        run_step=run_step,
        needs={"train": ("prepare",)},
    )


def test_stepwise_tasks_run_asked_steps_in_order_skip_fail_cancel_and_rerun(tmp_path: Path) -> None:
    calls: list[tuple[str, dict]] = []
    runner = TaskRunner(TaskStore(tmp_path), GpuAllocator([]))
    runner.register(stepwise_kind(calls))
    runner.start()
    task = runner.submit("steps", "wizard", {})
    time.sleep(0.2)
    assert runner.store.get(task.task_id).status == TaskStatus.PENDING and not calls  # type: ignore[union-attr]
    assert runner.queue_position(task.task_id) == 0  # waiting for steps, not in the queue

    def settle() -> Task:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            current = runner.store.get(task.task_id)
            assert current is not None
            if current.status != TaskStatus.RUNNING and "queued" not in current.steps.values():
                return current
            time.sleep(0.02)
        raise AssertionError(f"steps did not settle: {current}")

    # Asked out of order, they run in the kind's order. With nothing left to run the task is
    # `completed` (what a client polling for completed/failed after each step waits for), and
    # `remaining_steps` says what was never asked for; progress is the share of steps finished.
    queued = runner.queue_steps(task.task_id, ["check", "prepare"])
    assert queued.status == TaskStatus.PENDING and queued.remaining_steps == ["prepare", "check", "train"]
    done = settle()
    assert [step for step, _ in calls] == ["prepare", "check"]
    assert done.status == TaskStatus.COMPLETED and done.remaining_steps == ["train"]
    assert round(done.progress) == 67 and done.to_dict()["remaining_steps"] == ["train"]
    assert done.steps == {"prepare": "done", "check": "skipped", "train": "pending"}
    assert done.result["steps"]["check"]["skipped"] == "checking is off"
    assert (runner.store.folder(task.task_id) / "prepared.txt").exists()

    # Asking for a step makes the task pending at once (never the completed state before it), so the
    # client's poll cannot end early; a failing step ends the task failed with its reason.
    assert runner.queue_steps(task.task_id, ["train"], {"fail": True}).status == TaskStatus.PENDING
    assert runner.store.get(task.task_id).status in (TaskStatus.PENDING, TaskStatus.RUNNING)  # type: ignore[union-attr]
    failed = settle()
    assert failed.status == TaskStatus.FAILED and "out of memory" in failed.error_message
    assert failed.steps["train"] == "failed"

    # Cancel mid-step, then run it again to completion: the task completes when every step is finished.
    with pytest.raises(BadInput, match="unknown step 'bake'"):
        runner.queue_steps(task.task_id, ["bake"])
    runner.queue_steps(task.task_id, ["train"], {"ticks": 200})
    while runner.store.get(task.task_id).steps["train"] != "running":  # type: ignore[union-attr]
        time.sleep(0.02)
    with pytest.raises(Conflict, match="running now"):
        runner.queue_steps(task.task_id, ["train"])
    runner.cancel(task.task_id)
    cancelled = runner.wait(task.task_id, timeout=5)
    assert cancelled.status == TaskStatus.CANCELLED and cancelled.steps["train"] == "cancelled"
    runner.queue_steps(task.task_id, ["train"], {"ticks": 3})
    completed = runner.wait(task.task_id, timeout=10)
    assert completed.status == TaskStatus.COMPLETED and completed.progress == 100
    assert completed.steps["train"] == "done" and completed.result["steps"]["train"]["ticks"] == 3
    log = runner.store.read_log(task.task_id)
    assert "step check: skipped (checking is off)" in log and "step train: done" in log
    runner.stop()


def test_a_step_running_at_shutdown_runs_again_after_the_restart(tmp_path: Path) -> None:
    calls: list[tuple[str, dict]] = []
    store = TaskStore(tmp_path)
    runner = TaskRunner(store, GpuAllocator([]))
    runner.register(stepwise_kind(calls))
    runner.start()
    task = runner.submit("steps", "wizard", {})
    runner.queue_steps(task.task_id, ["prepare", "train"], {"ticks": 400})
    while store.get(task.task_id).steps.get("train") != "running":  # type: ignore[union-attr]
        time.sleep(0.02)
    runner.stop()
    paused = store.get(task.task_id)
    assert paused is not None and paused.status == TaskStatus.PENDING
    assert paused.steps == {"prepare": "done", "check": "pending", "train": "queued"}

    calls.clear()
    restarted = TaskRunner(store, GpuAllocator([]))
    restarted.register(stepwise_kind(calls))
    store.update(task.task_id, config=paused.config | {"step_params": {"train": {"ticks": 2}}})
    restarted.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the run of the resumed step has ended
        resumed = store.get(task.task_id)
        assert resumed is not None
        if resumed.steps["train"] == "done" and resumed.status != TaskStatus.RUNNING:
            break
        time.sleep(0.02)
    assert [step for step, _ in calls] == ["train"]  # the finished step was not redone
    assert resumed.steps["train"] == "done"
    assert resumed.status == TaskStatus.COMPLETED and resumed.remaining_steps == ["check"]  # never asked for
    restarted.stop()


def test_needed_steps_come_along_and_step_defaults_underlie_step_params(tmp_path: Path) -> None:
    calls: list[tuple[str, dict]] = []
    runner = TaskRunner(TaskStore(tmp_path), GpuAllocator([]))
    runner.register(stepwise_kind(calls))
    runner.start()
    task = runner.submit(
        "steps", "defaults", {"step_defaults": {"train": {"ticks": 2, "note": "set at creation"}}}
    )

    # 'train' alone: 'prepare', which it needs, runs first; the creation's defaults are its params.
    queued = runner.queue_steps(task.task_id, ["train"], {})
    assert queued.steps == {"prepare": "queued", "check": "pending", "train": "queued"}
    done = runner.wait(task.task_id, timeout=10)
    assert [step for step, _ in calls] == ["prepare", "train"]
    assert calls[1][1] == {"ticks": 2, "note": "set at creation"}
    assert done.status == TaskStatus.COMPLETED and done.remaining_steps == ["check"]
    assert "queued step(s): train (and prepare, which they need)" in runner.store.read_log(task.task_id)

    # Asked again with params: they override the defaults key by key; 'prepare' is done, not redone.
    calls.clear()
    runner.queue_steps(task.task_id, ["train"], {"ticks": 1})
    runner.wait(task.task_id, timeout=10)
    assert calls == [("train", {"ticks": 1, "note": "set at creation"})]
    runner.stop()


def test_store_updates_of_different_fields_never_undo_each_other(tmp_path: Path) -> None:
    """A running step's progress writes and a client's queued step land on the same row at once."""
    import threading

    store = TaskStore(tmp_path)
    task = store.create("steps", "race", {}, steps=[f"s{i}" for i in range(40)])

    def report_progress() -> None:
        for percent in range(200):
            store.update(task.task_id, progress=percent / 2)

    writer = threading.Thread(target=report_progress)
    writer.start()
    for i in range(40):  # one writer of steps, as under the runner's lock
        current = store.get(task.task_id)
        assert current is not None
        store.update(task.task_id, steps=current.steps | {f"s{i}": "queued"})
    writer.join()
    final = store.get(task.task_id)
    assert final is not None and set(final.steps.values()) == {"queued"} and final.progress == 99.5
    store.delete(task.task_id)
    with pytest.raises(KeyError):  # an update after a delete does not bring the row back
        store.update(task.task_id, progress=1.0)
    assert store.get(task.task_id) is None


def test_short_jobs_run_in_their_own_lane_while_a_long_job_holds_the_worker(tmp_path: Path) -> None:
    long_kind = slow_kind(30)
    short = TaskKind("quick", lambda context: {"done": True}, is_short=lambda config: True)
    runner = TaskRunner(TaskStore(tmp_path), GpuAllocator([]), workers=1, short_lane_workers=1)
    runner.register(long_kind)
    runner.register(short)
    runner.start()
    long_task = runner.submit("slow", "long", {})
    while runner.store.get(long_task.task_id).status != TaskStatus.RUNNING:  # type: ignore[union-attr]
        time.sleep(0.02)
    started = time.monotonic()
    quick = runner.wait(runner.submit("quick", "short", {}).task_id, timeout=5)
    assert quick.status == TaskStatus.COMPLETED and time.monotonic() - started < 2
    # A long job does not take the short lane: the second one waits for the general worker.
    second_long = runner.submit("slow", "long 2", {})
    time.sleep(0.3)
    assert runner.store.get(second_long.task_id).status == TaskStatus.PENDING  # type: ignore[union-attr]
    runner.cancel(long_task.task_id)
    runner.cancel(second_long.task_id)
    runner.stop()


def test_waiting_for_a_dialogue_is_bounded(tmp_path: Path) -> None:
    from studio.server import create_app

    with TestClient(create_app(make_settings(tmp_path, max_wait_seconds=0.2))) as client:
        script = "\n".join(f"[S{1 + i % 2}] This is turn number {i} of a longer talk." for i in range(30))
        response = client.post("/api/v1/dialogue", json={"script": script, "wait": True})
        assert response.status_code == 202 and response.json()["status"] in ("pending", "running")
        client.post(f"/api/v1/task/{response.json()['task_id']}/cancel")
