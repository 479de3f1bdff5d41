"""Operations: /metrics, request ids and JSON logs, and a graceful SIGTERM that pauses a running task."""

from __future__ import annotations

import json
import logging
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from studio.observability import JsonFormatter
from studio.tasks.store import TaskStatus, TaskStore
from tests.conftest import LiveServer, make_settings, wait_for_task

UNKNOWN_TASK = "0123456789abcdef"


def scrape(client: TestClient | httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`/metrics` as {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_requests_by_route_template_tasks_and_engines(tmp_path: Path) -> None:
    from studio.server import create_app

    with TestClient(create_app(make_settings(tmp_path / "a"))) as client:
        assert client.get(f"/api/v1/task/{UNKNOWN_TASK}").status_code == 404
        created = client.post(
            "/api/v1/task/create", json={"kind": "speech", "config": {"text": "Hello there.", "voice": "joe"}}
        ).json()
        assert wait_for_task(client, created["task_id"])["status"] == "completed"
        metrics = scrape(client)
        text = client.get("/metrics").text

        # Requests: labelled by the route template, never the raw id.
        route = "/api/v1/task/{task_id}"
        assert value(metrics, "studio_requests_total", method="GET", route=route, status="404") == 1
        assert value(
            metrics, "studio_requests_total", method="POST", route="/api/v1/task/create", status="200"
        )
        assert value(metrics, "studio_request_seconds_count", route=route) >= 2  # 404 + the polls
        assert UNKNOWN_TASK not in text and created["task_id"] not in text
        # Tasks: gauges read from the store, the outcome counter, the queue.
        assert value(metrics, "studio_tasks", kind="speech", status="completed") == 1
        assert value(metrics, "studio_tasks", kind="dialogue", status="completed") == 0
        assert value(metrics, "studio_task_outcomes_total", kind="speech", outcome="completed") == 1
        assert value(metrics, "studio_queue_length") == 0
        # Engines: "joe" is a Piper voice, loaded by that synthesis.
        assert value(metrics, "studio_engine_loaded", engine="piper") == 1
        assert value(metrics, "studio_engine_loaded", engine="moss-ttsd") == 0
        assert value(metrics, "studio_engine_events_total", engine="piper", action="load") == 1
        assert value(metrics, "process_resident_memory_bytes") > 10 * 2**20

        client.app.state.studio.registry.unload("piper")
        metrics = scrape(client)
        assert value(metrics, "studio_engine_loaded", engine="piper") == 0
        assert value(metrics, "studio_engine_events_total", engine="piper", action="unload") == 1

    # Another app in the same process counts on its own, and /metrics needs no API key.
    with TestClient(create_app(make_settings(tmp_path / "b", api_keys=["sekret"]))) as other:
        assert other.get("/api/v1/tasks").status_code == 401
        metrics = scrape(other)
        assert value(metrics, "studio_requests_total", method="GET", route="/api/v1/tasks", status="401") == 1
        assert value(metrics, "studio_task_outcomes_total", kind="speech", outcome="completed") is None
        assert value(metrics, "studio_tasks", kind="speech", status="completed") == 0


def test_request_ids_are_echoed_and_each_request_is_one_json_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from studio.server import create_app

    caplog.set_level(logging.INFO, logger="studio.requests")
    with TestClient(create_app(make_settings(tmp_path))) as client:
        mine = client.get(f"/api/v1/task/{UNKNOWN_TASK}?token=secret", headers={"X-Request-ID": "abc-123"})
        assert mine.headers["x-request-id"] == "abc-123"
        made = client.get("/health").headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{12}", made)
        hostile = client.get("/health", headers={"X-Request-ID": 'x" "level": "critical'})
        assert re.fullmatch(r"[0-9a-f]{12}", hostile.headers["x-request-id"])  # never echoed into logs
        client.get("/favicon.ico")  # polling/static noise: counted, not logged
        before = sum(v for (name, _), v in scrape(client).items() if name == "studio_requests_total")
        assert before == 4

    records = [r for r in caplog.records if getattr(r, "event", None) == "request"]
    assert [r.path for r in records] == [f"/api/v1/task/{UNKNOWN_TASK}", "/health", "/health", "/metrics"]
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["event"] == "request" and line["logger"] == "studio.requests" and line["level"] == "info"
    assert {"ts", "method", "path", "status", "duration_ms", "owner", "request_id"} <= set(line)
    assert line["request_id"] == "abc-123" and line["status"] == 404 and line["method"] == "GET"
    assert line["path"] == f"/api/v1/task/{UNKNOWN_TASK}" and "secret" not in json.dumps(line)
    assert line["owner"] == "ip-testclient"
    assert records[1].request_id == made


def long_script(turns: int) -> str:
    return "\n".join(
        f"[S{1 + i % 2}] This is turn number {i + 1}, and it carries a few more words to speak."
        for i in range(turns)
    )


def log_lines(data_dir: Path) -> list[dict]:
    lines = (data_dir / "server.log").read_text(encoding="utf-8", errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.slow
def test_sigterm_pauses_a_running_dialogue_and_the_next_start_resumes_it(tmp_path: Path) -> None:
    server = LiveServer(tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # Finished work from before the shutdown, and a JSON log line for a request.
            done = client.post(
                "/api/v1/task/create",
                json={"kind": "speech", "config": {"text": "Finished work.", "voice": "joe"}},
                headers={"X-Request-ID": "before-sigterm"},
            ).json()
            assert wait_for_task(client, done["task_id"])["status"] == "completed"
            audio_before = client.get(f"/api/v1/task/{done['task_id']}/files/download/speech.wav").content

            task = client.post(
                "/api/v1/dialogue", json={"script": long_script(12), "voices": {"S2": "joe"}}
            ).json()
            turns = tmp_path / "tasks" / task["task_id"] / "_turns"
            deadline = time.monotonic() + 120
            while len(list(turns.glob("*.json"))) < 3:
                assert time.monotonic() < deadline, "no turns were made"
                time.sleep(0.05)
            kept = {
                p.name: p.stat().st_mtime_ns for p in turns.glob("*.wav") if p.with_suffix(".json").exists()
            }

        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 0
        exit_seconds = time.monotonic() - started
        print(f"\nSIGTERM -> exit in {exit_seconds:.1f} s; {len(kept)} turns were on disk")

        lines = log_lines(tmp_path)
        tagged = [line for line in lines if line.get("request_id") == "before-sigterm"]
        request = next(line for line in tagged if line["event"] == "request")
        assert request["path"] == "/api/v1/task/create" and request["method"] == "POST"
        assert request["status"] == 200 and request["owner"] == "ip-127.0.0.1" and request["level"] == "info"
        submitted = next(line for line in tagged if line["event"] == "task")  # logged inside that request
        assert submitted["action"] == "submitted" and submitted["task_id"] == done["task_id"]
        paused = [line for line in lines if line.get("action") == "paused"]
        assert paused and paused[0]["task_id"] == task["task_id"] and paused[0]["event"] == "task"
        stored = TaskStore(tmp_path / "tasks").get(task["task_id"])
        assert stored is not None and stored.status == TaskStatus.PENDING  # paused, not failed
        assert "paused" in (turns.parent / "task.log").read_text()
        on_disk = len(list(turns.glob("*.json")))
        assert 3 <= on_disk < 12

        server = LiveServer(tmp_path).start()  # the next start, same data folder (and same owner)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            resumed = wait_for_task(client, task["task_id"], timeout=300)
            assert resumed["status"] == "completed" and resumed["result"]["turns"] == 12
            assert all((turns / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())
            logs = client.get(f"/api/v1/task/{task['task_id']}/logs").text
            assert f"kept {on_disk} turn(s)" in logs and "resuming" in logs
            print(f"resumed: kept {on_disk} turns, made {12 - on_disk}")

            listed = {t["task_id"]: t for t in client.get("/api/v1/tasks").json()["tasks"]}
            assert listed[done["task_id"]]["status"] == "completed"
            audio_after = client.get(f"/api/v1/task/{done['task_id']}/files/download/speech.wav")
            assert audio_after.status_code == 200 and audio_after.content == audio_before
            metrics = scrape(client)
            assert value(metrics, "studio_tasks", kind="dialogue", status="completed") == 1
            assert value(metrics, "studio_tasks", kind="speech", status="completed") == 1
            assert value(metrics, "studio_task_outcomes_total", kind="dialogue", outcome="completed") == 1
    finally:
        server.stop()
