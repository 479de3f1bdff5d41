"""The seed systems' own clients, as their documents print them, against a live studio server.

- GPT-SoVITS training service (`shared/seeds/gpt-sovits-training-service.md`, 使用示例): its
  `TrainingClient` and `main()`'s flow, copied as printed; only the base URL (the live server), the
  recordings' paths and the poll interval (`POLL_SECONDS`, printed as 10 s) differ, `main` returns
  what it saw and its config carries the studio's `step_defaults` (a quick fit, one test sentence:
  the client sends no step params). Three short Mandarin recordings made by the studio's own Kokoro
  go through all eleven steps with the default CPU backend (kokoro_fit) to a library voice.
- MegaTTS3 service (`shared/seeds/megatts3-service.md`, 使用指南): the health check, synthesize and
  synthesize_file calls, the `MegaTTS3Client` class, `upload_voice_sample` and `list_voices`, as
  printed. MegaTTS3 itself does not run here (no GPU, no weights): its voice latent is accepted and
  the clip's voice is fitted for Kokoro instead (the response headers say so).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from studio.audio import decode
from tests.conftest import LiveServer

pytestmark = pytest.mark.slow

POLL_SECONDS = 0.5  # the client's `time.sleep(10)` between polls
STEP_TIMEOUT_S = 600  # the client waits up to 3600 s per step; a stuck task should fail sooner here
STUDIO_DEFAULTS = {  # params the studio's steps start from (the client sends none)
    "step_defaults": {"train_sovits": {"mode": "quick"}, "test_inference": {"sentences": ["今天天气很好。"]}}
}
RECORDINGS = (
    "今天天气很好，我们一起去公园散步吧。",
    "这家餐厅的饭菜非常好吃，价格也很合理。",
    "学习一门新的语言需要耐心和时间。",
)
SAMPLE_TEXT = "你好，欢迎来到我们的语音工作室，今天我们一起聊聊声音的故事。"


# ---- the GPT-SoVITS training service's client, as printed -------------------------------------------
class TrainingClient:
    def __init__(self, base_url):
        self.base_url = base_url

    def create_task(self, task_name, config):
        return requests.post(
            f"{self.base_url}/task/create", json={"task_name": task_name, "config": config}
        ).json()

    def upload_audio(self, task_id, audio_file_path):
        with open(audio_file_path, "rb") as f:
            return requests.post(f"{self.base_url}/task/{task_id}/files/upload", files={"file": f}).json()

    def execute_step(self, task_id, step_name, params=None):
        return requests.post(
            f"{self.base_url}/task/{task_id}/step/{step_name}", json={"params": params or {}}
        ).json()

    def get_task_status(self, task_id):
        return requests.get(f"{self.base_url}/task/{task_id}").json()

    def wait_for_completion(self, task_id, timeout=3600):
        start = time.time()
        while time.time() - start < timeout:
            s = self.get_task_status(task_id)
            if s["status"] in ["completed", "failed"]:
                return s
            print(f"进度: {s['progress']:.1f}% - {s['current_step']}")
            time.sleep(POLL_SECONDS)
        raise TimeoutError("任务执行超时")


def main(base_url, audio_files):
    client = TrainingClient(base_url)
    task = client.create_task(
        "语音克隆测试",
        {
            "exp_name": "my_speaker",
            "language": "zh",
            "batch_size": 16,
            "epochs_s2": 20,
            "epochs_s1": 8,
            "gpu_id": "0",
            **STUDIO_DEFAULTS,
        },
    )
    task_id = task["task_id"]

    for f in audio_files:
        client.upload_audio(task_id, f)

    seen = {}
    for step in [
        "convert_audio",
        "slice_audio",
        "denoise_audio",
        "asr_transcribe",
        "extract_text_features",
        "extract_audio_features",
        "extract_speaker_vectors",
        "extract_semantic_features",
        "train_sovits",
        "train_gpt",
        "test_inference",
    ]:
        client.execute_step(task_id, step)
        final_status = client.wait_for_completion(task_id, timeout=STEP_TIMEOUT_S)
        seen[step] = final_status
        if final_status["status"] == "failed":
            print("失败:", final_status.get("error_message"))
            break
    return task_id, seen


# ---- the MegaTTS3 service document's client code, as printed -----------------------------------------
class MegaTTS3Client:
    def __init__(self, base_url="http://localhost:9000"):
        self.base_url = base_url
        self.session = requests.Session()

    def health_check(self):
        """健康检查"""
        response = self.session.get(f"{self.base_url}/health")
        return response.json()

    def synthesize_text(self, text, voice_id, **params):
        """文本语音合成"""
        data = {"text": text, "voice_id": voice_id, "parameters": params}

        response = self.session.post(f"{self.base_url}/api/v1/tts/synthesize", json=data, stream=True)

        return response.content

    def synthesize_with_voice_file(self, text, voice_file_path, latent_file_path=None, **params):
        """使用音频文件进行语音克隆"""
        files = {"voice_file": open(voice_file_path, "rb"), "text": (None, text)}  # noqa: SIM115

        if latent_file_path:
            files["voice_latent"] = open(latent_file_path, "rb")  # noqa: SIM115

        for key, value in params.items():
            files[key] = (None, str(value))

        try:
            response = self.session.post(
                f"{self.base_url}/api/v1/tts/synthesize_file", files=files, stream=True
            )

            return response.content
        finally:
            # 关闭文件句柄
            for file_obj in files.values():
                if hasattr(file_obj, "close"):
                    file_obj.close()


def upload_voice_sample(client, voice_id, voice_file, description=""):
    """上传声音样本"""
    files = {
        "voice_file": open(voice_file, "rb"),  # noqa: SIM115
        "voice_id": (None, voice_id),
        "description": (None, description),
    }

    response = client.session.post(f"{client.base_url}/api/v1/voices/upload", files=files)

    return response.json()


def list_voices(client):
    """获取可用声音列表"""
    response = client.session.get(f"{client.base_url}/api/v1/voices")
    return response.json()


# ---- fixtures and checks ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A studio of its own: the voices these clients make stay out of the shared live server. Their
    fits search briefly: these tests are about the clients' requests, not the voices' likeness."""
    live = LiveServer(tmp_path_factory.mktemp("seed_clients"), env={"STUDIO_FIT_QUICK_TRIALS": "4"}).start()
    yield live
    live.stop()


def synthesize_as_documented(base_url: str, voice_id: str) -> requests.Response:
    """The MegaTTS3 document's 语音合成 request (its text and parameters) for `voice_id`."""
    return requests.post(
        f"{base_url}/api/v1/tts/synthesize",
        json={
            "text": "你好，这是MegaTTS3语音合成测试。",
            "voice_id": voice_id,
            "parameters": {"speed": 1.0, "pitch": 1.0, "emotion": "neutral"},
        },
    )


def speak(server: LiveServer, text: str, voice_id: str, path: Path) -> Path:
    """A Mandarin recording made by the studio's own Kokoro (through its synthesize route)."""
    response = requests.post(
        f"{server.url}/api/v1/tts/synthesize",
        json={"text": text, "voice_id": voice_id, "language": "zh"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return path


def assert_speech(response: requests.Response, min_seconds: float = 0.5, max_seconds: float = 20.0) -> None:
    """A 200 WAV answer holding speech: long enough, not silent, not clipped noise."""
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = decode(response.content)
    seconds = len(audio) / rate
    rms = float(np.sqrt(np.mean(audio**2)))
    assert min_seconds < seconds < max_seconds and 0.01 < rms < 0.5, (seconds, rms)


def test_gpt_sovits_client_trains_a_voice_through_all_eleven_steps(
    server: LiveServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    audio_files = [
        str(speak(server, text, "jm_kumo", tmp_path / f"audio{i}.wav"))
        for i, text in enumerate(RECORDINGS, 1)
    ]
    task_id, seen = main(f"{server.url}/api/v1", audio_files)

    # The client's loop ended on `completed` after every one of its steps (never on a stale state:
    # each step it asked for had run by then), and the task is completed with nothing left.
    assert len(seen) == 11 and "test_inference" in seen, list(seen)
    for step, status in seen.items():
        assert status["status"] == "completed", (step, status["error_message"])
        assert status["steps"][step] in ("done", "skipped"), (step, status["steps"])
    task = requests.get(f"{server.url}/api/v1/task/{task_id}").json()
    assert task["status"] == "completed" and task["remaining_steps"] == [] and task["progress"] == 100
    assert set(task["steps"].values()) <= {"done", "skipped"}, task["steps"]
    assert task["steps"]["train_gpt"] == "skipped" and task["steps"]["export_voice"] == "done"

    # What became of the client's keys: the voice id, the language, and what kokoro_fit has no use for.
    assert task["config"]["voice_name"] == "my_speaker" and task["config"]["language"] == "zh"
    notes = task["result"]["config_notes"]
    assert set(notes["mapped"]) == {"exp_name", "language"}
    assert set(notes["not_applicable"]) == {"batch_size", "epochs_s1", "epochs_s2", "gpu_id"}
    assert task["result"]["steps"]["train_sovits"]["mode"] == "quick"

    voices = {v["id"]: v for v in requests.get(f"{server.url}/api/v1/voices").json()["voices"]}
    assert voices.get("my_speaker", {}).get("type") == "library" and voices["my_speaker"]["usable"], voices
    spoken = requests.post(
        f"{server.url}/api/v1/tts/synthesize",
        json={"text": "你好，我是用三段录音训练出来的声音。", "voice_id": "my_speaker"},
    )
    assert_speech(spoken, min_seconds=1.5, max_seconds=12.0)
    print(f"GPT-SoVITS client flow: {time.monotonic() - started:.0f} s")


def test_megatts3_document_examples(server: LiveServer, tmp_path: Path) -> None:
    started = time.monotonic()
    base_url = server.url
    reference_voice = speak(server, SAMPLE_TEXT, "jf_alpha", tmp_path / "reference_voice.wav")
    sample_voice = speak(server, SAMPLE_TEXT, "jf_alpha", tmp_path / "sample_voice.wav")
    latent = tmp_path / "reference_voice.npy"
    np.save(latent, np.zeros((1, 25 * 5, 32), np.float32))  # a WaveVAE latent's shape: [1, frames, 32]

    # 健康检查: curl http://localhost:9000/health
    health = requests.get(f"{base_url}/health").json()
    assert health["status"] == "healthy"
    assert {"version", "model_loaded", "gpu_available", "memory_usage"} <= set(health)

    # 语音合成 with the document's placeholder voice id: the studio names the voices it has.
    placeholder = synthesize_as_documented(base_url, "voice_001")
    assert placeholder.status_code == 404, placeholder.text
    error = placeholder.json()["error"]
    assert error["code"] == "unknown_voice" and "voice_001" in error["message"]
    assert "jf_alpha" in error["message"] and "jm_kumo" in error["message"]

    # 上传声音样本, then 获取可用声音列表 (the upload fits the voice for Kokoro: about a minute on 2 cores).
    client = MegaTTS3Client(base_url)
    result = upload_voice_sample(
        client, voice_id="custom_voice_001", voice_file=str(sample_voice), description="自定义女声样本"
    )
    assert result["id"] == "custom_voice_001" and result["description"] == "自定义女声样本", result
    voices = list_voices(client)
    for voice in voices["voices"]:
        print(f"ID: {voice['id']}, 名称: {voice['name']}, 类型: {voice['type']}")
    listed = {voice["id"]: voice for voice in voices["voices"]}
    assert "custom_voice_001" in listed and "jf_alpha" in listed

    # 语音合成 (curl) with the uploaded voice and the document's parameters.
    response = synthesize_as_documented(base_url, "custom_voice_001")
    assert_speech(response, min_seconds=1.0)

    # 文件上传合成 (curl -F): the clip, its latent and the speed (the clip's voice is fitted, then cached).
    with reference_voice.open("rb") as voice_file, latent.open("rb") as voice_latent:
        response = requests.post(
            f"{base_url}/api/v1/tts/synthesize_file",
            data={"text": "你好世界", "speed": "1.0"},
            files={"voice_file": voice_file, "voice_latent": voice_latent},
        )
    assert_speech(response)
    assert response.headers["x-engine"] == "kokoro"  # MegaTTS3 is not set up here: a fitted Kokoro voice
    assert response.headers["x-clone-cached"] == "true"  # the same recording as the upload: its fit reused

    # The Python client: 检查服务状态, 语音合成 (placeholder id, then the uploaded voice), 克隆.
    health = client.health_check()
    print(f"服务状态: {health['status']}")
    assert health["status"] == "healthy"
    audio_data = client.synthesize_text(
        text="欢迎使用MegaTTS3语音合成服务", voice_id="voice_001", speed=1.0, pitch=1.0
    )
    assert json.loads(audio_data)["error"]["code"] == "unknown_voice" and b"jm_kumo" in audio_data
    audio_data = client.synthesize_text(
        text="欢迎使用MegaTTS3语音合成服务", voice_id="custom_voice_001", speed=1.0, pitch=1.0
    )
    output = tmp_path / "output.wav"
    output.write_bytes(audio_data)
    audio, rate = decode(output.read_bytes())
    assert len(audio) / rate > 1.0 and float(np.sqrt(np.mean(audio**2))) > 0.01
    cloned = client.synthesize_with_voice_file("你好世界", str(reference_voice), str(latent), speed=1.0)
    audio, rate = decode(cloned)  # the same clip as above: its fitted voice is reused
    assert len(audio) / rate > 0.5 and float(np.sqrt(np.mean(audio**2))) > 0.01
    print(f"MegaTTS3 examples: {time.monotonic() - started:.0f} s")
