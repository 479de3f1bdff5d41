"""Optional protection for shared use: API keys, UI login, rate limits, YAML configuration."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from studio.config import Settings
from studio.server import create_app
from tests.conftest import make_settings


def client_for(tmp_path: Path, **settings: object) -> TestClient:
    return TestClient(create_app(make_settings(tmp_path, **settings)))


def test_api_keys_guard_the_api_but_not_health(tmp_path: Path) -> None:
    with client_for(tmp_path, api_keys=["k-one", "k-two"]) as client:
        assert client.get("/health").status_code == 200
        denied = client.get("/api/v1/engines")
        assert denied.status_code == 401 and "Authorization: Bearer" in denied.json()["error"]["message"]
        wrong = client.get("/api/v1/engines", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/api/v1/engines", headers={"Authorization": "Bearer k-two"}).status_code == 200
        assert client.get("/api/v1/tasks", headers={"X-API-Key": "k-one"}).status_code == 200
        speech = client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "wav"})
        assert speech.status_code == 401


def test_rate_limit_answers_429_after_the_burst(tmp_path: Path) -> None:
    with client_for(tmp_path, rate_limit_per_minute=30, rate_limit_burst=3) as client:
        body = {"text": "", "voice_id": "joe"}  # cheap: rejected after the rate check
        codes = [client.post("/api/v1/tts/synthesize", json=body).status_code for _ in range(5)]
        assert codes[:3] == [422, 422, 422] and codes[3:] == [429, 429]
        limited = client.post("/api/v1/tts/synthesize", json=body)
        assert "try again in" in limited.json()["error"]["message"] and limited.headers["retry-after"]
        assert client.get("/api/v1/engines").status_code == 200  # only synthesis routes are limited


def test_ui_login_when_users_are_configured(tmp_path: Path) -> None:
    with client_for(tmp_path, ui_users=["ada:secret"]) as client:
        assert client.get("/config").status_code == 401  # the UI's config needs a login
        assert client.post("/login", data={"username": "ada", "password": "wrong"}).status_code == 400
        assert client.post("/login", data={"username": "ada", "password": "secret"}).status_code == 200
        assert client.get("/config").status_code == 200


def test_settings_from_yaml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "studio.yaml"
    config.write_text("port: 9000\napi_keys: [a, b]\nrate_limit_per_minute: 60\n")
    monkeypatch.setenv("STUDIO_CONFIG", str(config))
    monkeypatch.setenv("STUDIO_PORT", "7000")  # the environment wins over the file
    settings = Settings()
    assert (settings.port, settings.api_keys, settings.rate_limit_per_minute) == (7000, ["a", "b"], 60)
    monkeypatch.setenv("STUDIO_API_KEYS", "x, y")
    assert Settings().api_keys == ["x", "y"]
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        Settings()


def test_owners_see_only_their_own_tasks_unless_shared(tmp_path: Path) -> None:
    with client_for(tmp_path, api_keys=["alice-key", "bob-key"]) as client:
        alice = {"Authorization": "Bearer alice-key"}
        bob = {"Authorization": "Bearer bob-key"}
        body = {"kind": "speech", "config": {"text": "Private words.", "voice": "joe"}}
        task = client.post("/api/v1/task/create", json=body, headers=alice).json()
        base = f"/api/v1/task/{task['task_id']}"
        deadline = time.monotonic() + 60
        while client.get(base, headers=alice).json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get(f"{base}/files/download/speech.wav", headers=alice).status_code == 200

        for method, path in [
            ("get", base),
            ("get", f"{base}/logs"),
            ("get", f"{base}/files/download/speech.wav"),
            ("post", f"{base}/cancel"),
            ("post", f"{base}/share"),
            ("delete", base),
        ]:
            response = getattr(client, method)(path, headers=bob)
            assert response.status_code == 404 and response.json()["error"]["code"] == "task_not_found", path
        assert client.get("/api/v1/tasks", headers=bob).json()["tasks"] == []
        assert [t["task_id"] for t in client.get("/api/v1/tasks", headers=alice).json()["tasks"]] == [
            task["task_id"]
        ]

        assert client.post(f"{base}/share", headers=alice).json()["task_id"] == task["task_id"]
        assert (
            client.get(f"{base}/files/download/speech.wav", headers=bob).status_code == 200
        )  # shared: readable
        assert client.delete(base, headers=bob).status_code == 404  # but still only Alice's to delete
        assert client.delete(base, headers=alice).status_code == 200


def test_each_key_has_its_own_rate_limit_and_quota(tmp_path: Path) -> None:
    with client_for(
        tmp_path, api_keys=["slow:2", "capped:600:3", "plain"], rate_limit_per_minute=600
    ) as client:
        body = {"text": "", "voice_id": "joe"}  # rejected after the limits: cheap

        def codes(key: str, n: int) -> list[int]:
            headers = {"Authorization": f"Bearer {key}"}
            return [
                client.post("/api/v1/tts/synthesize", json=body, headers=headers).status_code
                for _ in range(n)
            ]

        assert codes("capped", 5) == [422, 422, 422, 429, 429]  # daily quota of 3
        quota = client.post("/api/v1/tts/synthesize", json=body, headers={"Authorization": "Bearer capped"})
        assert quota.json()["error"]["code"] == "quota_exceeded"
        slow = codes("slow", 12)
        assert slow.count(422) == 10 and slow[-1] == 429  # burst 10, then 2 per minute
        assert codes("plain", 10) == [422] * 10  # the server default rate, burst 10
