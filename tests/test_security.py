"""Optional protection for shared use: API keys, UI login, rate limits, YAML configuration."""

from __future__ import annotations

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
