"""Mandarin, Japanese and English: detected per sentence, spoken through the G2P each was learned
from, heard back by the bundled multilingual Whisper; voices that cannot speak a language say so."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from engines.mandarin import MandarinG2P, normalize_mandarin
from engines.text import canonical_language, detect_language, split_sentences
from studio.services.asr import Transcriber, transcript_error_rate


def test_each_sentence_is_detected_by_its_script() -> None:
    assert detect_language("今天天气很好。") == "zh"
    assert detect_language("今日はいい天気ですね。") == "ja"
    assert detect_language("The weather is nice.") == "en-us"
    assert detect_language("我们用MegaTTS3做语音合成。") == "zh"  # Latin words inside Chinese
    assert detect_language("Kokoroの声です。") == "ja"
    # Kanji alone is Chinese, unless the text around it is Japanese.
    assert detect_language("東京大学。") == "zh"
    assert detect_language("東京大学。", context="東京大学。ここで勉強しています。") == "ja"
    text = "你好，世界。こんにちは。Hello there."
    assert [detect_language(s, text) for s in split_sentences(text)] == ["ja", "ja", "en-us"]
    mixed = "你好，世界。Hello there."
    assert [detect_language(s, mixed) for s in split_sentences(mixed)] == ["zh", "en-us"]


def test_languages_take_the_spellings_clients_send() -> None:
    assert canonical_language(None) is None and canonical_language("auto") is None
    assert canonical_language("中文") == canonical_language("zh-CN") == canonical_language("cmn") == "zh"
    assert canonical_language("日文") == canonical_language("Japanese") == "ja"
    assert canonical_language("en") == canonical_language("英文") == "en-us"
    assert canonical_language("en-GB") == "en-gb"
    with pytest.raises(ValueError, match="klingon"):
        canonical_language("klingon")


def test_cjk_sentences_split_on_their_own_marks_and_long_ones_at_commas() -> None:
    assert split_sentences("他说：“你好。”然后走了！真的吗?是的……好吧。") == [
        "他说：“你好。”",
        "然后走了！",
        "真的吗?",
        "是的……",
        "好吧。",
    ]
    clause = "我们在公园里散步" * 8  # 64 characters: about 15 s of speech
    long = f"{clause}，{clause}，{clause}。"
    pieces = split_sentences(long)
    assert len(pieces) == 3 and "".join(pieces) == long  # cut at the commas, no spaces inserted
    assert all(" " not in piece for piece in pieces)


def test_mandarin_numbers_money_and_dates_are_read_in_chinese() -> None:
    assert normalize_mandarin("价格是¥1,000。") == "价格是一千元。"
    assert normalize_mandarin("增长了50%") == "增长了百分之五十"
    assert normalize_mandarin("2024年3月5日下午3:30开会") == "二零二四年三月五日下午三点半开会"


def test_latin_words_inside_chinese_are_read_as_english() -> None:
    asked: list[str] = []
    g2p = MandarinG2P(english=lambda words: asked.append(words) or "ˈɛnɡlɪʃ")
    phonemes = g2p("我们用MegaTTS模型。")
    assert asked == ["Mega TTS"]  # camel case split: the capitals are spelled as letters
    assert "ˈɛnɡlɪʃ" in phonemes and not re.search("[A-Z]", phonemes)
    assert "↓" in phonemes or "↗" in phonemes or "→" in phonemes or "↘" in phonemes  # tones


def speak(client: TestClient, body: dict, route: str = "/api/v1/tts/synthesize") -> tuple[np.ndarray, int]:
    response = client.post(route, json=body)
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert np.sqrt(np.mean(audio**2)) > 0.02
    return audio, rate


def test_the_megatts3_documents_chinese_request_is_heard_as_chinese(
    studio_client: TestClient, transcriber: Transcriber
) -> None:
    # As the MegaTTS3 service document sends it: Chinese text, no language field, an emotion.
    parameters = {"speed": 1.0, "pitch": 1.0, "emotion": "neutral"}
    text = "你好，今天我们来聊聊人工智能。"
    audio, rate = speak(studio_client, {"text": text, "voice_id": "jm_kumo", "parameters": parameters})
    assert 1.5 < len(audio) / rate < 8
    heard = transcriber.transcribe(audio, rate)
    assert heard.language == "zh", heard
    assert transcript_error_rate(text, heard.text, "zh") <= 0.35, heard.text

    # The document's own sentence, with a Latin product name inside: the name is said as a word.
    text = "你好，这是MegaTTS3语音合成测试。"
    audio, rate = speak(studio_client, {"text": text, "voice_id": "jf_alpha", "parameters": parameters})
    heard = transcriber.transcribe(audio, rate)
    assert heard.language == "zh" and re.search("[A-Za-z]{2,}", heard.text), heard
    assert transcript_error_rate(text, heard.text, "zh") <= 0.6, heard.text


def test_openai_route_speaks_japanese_without_a_language(
    studio_client: TestClient, transcriber: Transcriber
) -> None:
    text = "こんにちは。今日はとても暑いですね。"
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}
    audio, rate = speak(studio_client, body, "/v1/audio/speech")
    heard = transcriber.transcribe(audio, rate)
    assert heard.language == "ja", heard
    assert transcript_error_rate(text, heard.text, "ja") <= 0.25, heard.text


def test_a_voice_that_cannot_speak_the_language_is_refused_naming_it(studio_client: TestClient) -> None:
    response = studio_client.post("/api/v1/tts/synthesize", json={"text": "你好，世界。", "voice_id": "joe"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_language"
    assert "Mandarin Chinese (zh)" in error["message"] and "jm_kumo" in error["message"]
    # Named, the language is what counts, whatever the text looks like.
    body = {"model": "tts-1", "input": "Hello.", "voice": "joe", "language": "ja"}
    response = studio_client.post("/v1/audio/speech", json=body)
    assert response.status_code == 422 and "Japanese" in response.json()["error"]["message"]
    response = studio_client.post("/api/v1/tts/synthesize", json={"text": "Hi.", "language": "klingon"})
    error = response.json()["error"]  # the schema's list of spellings, checked before anything runs
    assert response.status_code == 422 and "language" in error["message"] and "'zh'" in error["message"], (
        error
    )
    # In a dialogue: refused before any task exists, with the line.
    script = "Alice: Hello there.\nBob: 你好。"
    response = studio_client.post("/api/v1/dialogue", json={"script": script, "voices": {"Bob": "joe"}})
    assert response.status_code == 422 and "line 2 (Bob)" in response.json()["error"]["message"]


CHINESE_DIALOGUE = """角色1：你好，今天我们来聊聊人工智能。它发展得很快。
[S2]是啊，我每天都在用它写代码。
角色1：那你觉得它会取代程序员吗？
[S2]我觉得不会。它只是一个工具。"""


def test_a_chinese_dialogue_gets_a_cue_per_sentence_with_its_speaker(
    studio_client: TestClient, transcriber: Transcriber
) -> None:
    response = studio_client.post("/api/v1/dialogue", json={"script": CHINESE_DIALOGUE, "wait": True})
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed", task

    def download(name: str) -> bytes:
        answer = studio_client.get(f"/api/v1/task/{task['task_id']}/files/download/{name}")
        assert answer.status_code == 200
        return answer.content

    srt = download("dialogue.srt").decode()
    cues = [block.split("\n")[2] for block in srt.strip().split("\n\n")]
    assert cues == [
        "[角色1] 你好，今天我们来聊聊人工智能。",
        "[角色1] 它发展得很快。",
        "[S2] 是啊，我每天都在用它写代码。",
        "[角色1] 那你觉得它会取代程序员吗？",
        "[S2] 我觉得不会。",
        "[S2] 它只是一个工具。",
    ]
    timing = json.loads(download("timing.json"))
    assert [t["speaker"] for t in timing] == ["S1", "S2", "S1", "S2"]
    assert "joe" not in {t["voice"] for t in timing}
    mix, rate = sf.read(io.BytesIO(download("dialogue.wav")), dtype="float32")
    first = mix[int(timing[0]["start"] * rate) : int(timing[0]["end"] * rate)]
    heard = transcriber.transcribe(first, rate)
    assert heard.language == "zh", heard
    said = "你好，今天我们来聊聊人工智能。它发展得很快。"
    assert transcript_error_rate(said, heard.text, "zh") <= 0.35, heard.text


def test_default_voices_of_a_chinese_script_all_speak_chinese(studio_client: TestClient) -> None:
    from studio.services.dialogue import DialogueConfig

    studio = studio_client.app.state.studio  # type: ignore[attr-defined]
    script = "[S1]你好。\n[S2]你好。\n[S3]大家好。\n[S4]Hello everyone."
    _, planned = studio.dialogue.plan(DialogueConfig(script=script))
    voices = {p.turn.speaker: p.voice for p in planned}
    assert voices["S3"] != "joe" and voices["S4"] == "joe"  # joe only where the speaker speaks English
    assert len(set(voices.values())) == 4


def test_text_in_a_script_the_studio_does_not_speak_is_refused_naming_it(studio_client: TestClient) -> None:
    for text, script in (("สวัสดีครับ", "Thai"), ("안녕하세요.", "Hangul"), ("Привет, мир.", "Cyrillic")):
        response = studio_client.post("/v1/audio/speech", json={"input": text, "response_format": "wav"})
        assert response.status_code == 422, response.text
        assert f"{script} script" in response.json()["error"]["message"]
    script = "Alice: Hello.\nBob: Привет."
    response = studio_client.post("/api/v1/dialogue", json={"script": script})
    assert response.status_code == 422 and "line 2 (Bob)" in response.json()["error"]["message"]


def test_an_unknown_voice_names_the_library_voices_too(studio_client: TestClient) -> None:
    # The MegaTTS3 document uploads "custom_voice_001", then asks for its placeholder "voice_001".
    clip = studio_client.post(
        "/api/v1/tts/synthesize",
        json={
            "text": "Hello there, this is my voice. I am reading a few sentences so that the studio can learn how I sound."
        },
    )
    files = {"voice_file": ("sample_voice.wav", clip.content, "audio/wav")}
    data = {"voice_id": "custom_voice_001", "description": "自定义女声样本", "fit": "none"}
    assert studio_client.post("/api/v1/voices/upload", files=files, data=data).status_code == 200
    response = studio_client.post("/api/v1/tts/synthesize", json={"text": "你好。", "voice_id": "voice_001"})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "unknown voice 'voice_001'" in message and "custom_voice_001" in message
    assert studio_client.delete("/api/v1/voices/custom_voice_001").status_code == 200
