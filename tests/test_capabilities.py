"""Engines are picked by what they do: each capability beyond speaking sentences is an interface
(engines.base: ScriptSpeaker, ClipCloner, StepTrainer, VideoMaker) that the registry checks when an
engine claims it, and services ask the registry for the interface, never for an engine by name."""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from engines.base import (
    INTERFACES,
    Capability,
    Engine,
    EngineUnavailable,
    ScriptSpeaker,
    SynthesisOptions,
)
from engines.gpu import GpuAllocator
from engines.kokoro_onnx import KokoroOnnxEngine
from engines.registry import EngineRegistry
from studio.core import Studio
from studio.services.asr import word_error_rate
from studio.services.dialogue import DialogueConfig
from studio.tasks.records import TaskStatus
from tests.conftest import make_settings

TURNS = {
    "S1": "Good morning everyone, thank you for coming.",
    "S2": "It is a pleasure to be here today.",
    "S3": "Then let us begin with the first question.",
}


class KokoroScriptSpeaker(KokoroOnnxEngine):
    """A whole-script engine made of the embedded Kokoro (one voice per speaker, a pause between
    turns, in one array): real speech, so the studio's one-pass path (plan, one call, turns cut at
    the pauses, subtitles, stems) can be checked with the ASR. MOSS-TTSD is the real one."""

    info = replace(KokoroOnnxEngine.info, name="kokoro-script", capabilities=frozenset({Capability.DIALOGUE}))
    max_speakers = 3
    voices_by_speaker: ClassVar[dict[str, str]] = {"S1": "jm_kumo", "S2": "jf_alpha", "S3": "jf_tebukuro"}

    def synthesize_dialogue(
        self,
        script_text: str,
        prompts: list[tuple[Path, str]] | None = None,
        options: SynthesisOptions | None = None,
    ) -> np.ndarray:
        pieces = []
        for speaker, text in re.findall(r"\[(S\d)\]([^\[]*)", script_text):
            voice = self.voices_by_speaker[speaker]
            pieces += [
                chunk.audio for chunk in self.synthesize(text, voice, SynthesisOptions(language="en-us"))
            ]
            pieces.append(np.zeros(int(0.7 * self.info.sample_rate), np.float32))
        return np.concatenate(pieces)


def speaks_sentences(engine: Engine) -> bool:
    """Whether the engine's class makes speech of its own (Engine's defaults make none)."""
    cls = type(engine)
    return (
        cls._synthesize_sentence is not Engine._synthesize_sentence
        or cls._synthesize_timed is not Engine._synthesize_timed
    )


def test_every_engine_claims_what_it_does_and_only_that(studio_client: TestClient) -> None:
    registry = studio_client.app.state.studio.registry
    for name in registry.names():
        engine = registry.engine(name)
        claims = engine.info.capabilities
        assert Capability.TTS not in claims or speaks_sentences(engine), name
        for capability, interface in INTERFACES.items():
            assert (capability in claims) == isinstance(engine, interface), (name, capability)
    # MegaTTS3 speaks library voices that carry a latent; GPT-SoVITS the voices its training exported.
    assert {e.info.name for e in registry.with_capability(Capability.TTS)} == {
        "kokoro",
        "piper",
        "kokoro-torch",
        "megatts3",
        "gpt_sovits",
    }


def test_the_registry_refuses_a_claim_without_its_interface(tmp_path: Path) -> None:
    class Pretender(KokoroOnnxEngine):
        info = replace(KokoroOnnxEngine.info, name="pretender", capabilities=frozenset({Capability.DIALOGUE}))

    registry = EngineRegistry(tmp_path, GpuAllocator([]))
    with pytest.raises(TypeError, match="pretender claims dialogue but is no ScriptSpeaker"):
        registry.add(Pretender(tmp_path, GpuAllocator([])))
    assert registry.names() == []


def test_asking_for_a_capability_says_what_is_missing(studio_client: TestClient) -> None:
    registry = studio_client.app.state.studio.registry
    with pytest.raises(
        KeyError, match=r"no engine 'kokoro' here can speak a whole dialogue script .*: moss-ttsd"
    ):
        registry.capable(ScriptSpeaker, "kokoro")
    with pytest.raises(EngineUnavailable, match=r"moss-ttsd cannot run here: .*weights"):
        registry.capable(ScriptSpeaker)

    script = "[S1] Hello there.\n[S2] Hi."
    wrong = studio_client.post("/api/v1/dialogue", json={"script": script, "engine": "kokoro"})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "bad_engine", wrong.text
    assert "engines that can: moss-ttsd" in wrong.json()["error"]["message"]
    missing = studio_client.post("/api/v1/dialogue", json={"script": script, "engine": "moss-ttsd"})
    assert missing.status_code == 503 and "moss-ttsd cannot run here" in missing.json()["error"]["message"]
    choices = studio_client.get("/openapi.json").json()["components"]["schemas"]["DialogueBody"]
    assert "kokoro" not in json.dumps(choices["properties"]["engine"])  # only whole-script engines


def test_a_whole_script_engine_speaks_a_dialogue_in_one_pass(tmp_path: Path, transcriber) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path)
    studio = Studio(settings)
    studio.registry.add(
        KokoroScriptSpeaker(settings.weights_dir, studio.allocator, settings.cache_dir / "kokoro")
    )
    studio.start()
    try:
        script = "\n".join(f"[{speaker}] {text}" for speaker, text in TURNS.items())
        too_many = "\n".join(f"[S{n}] Hello." for n in range(1, 5))
        with pytest.raises(Exception, match="kokoro-script speaks up to 3 speakers; this script has 4"):
            studio.runner.submit("dialogue", "four", DialogueConfig(script=too_many, engine="kokoro-script"))
        config = DialogueConfig(script=script, engine="kokoro-script")
        task = studio.runner.wait(studio.runner.submit("dialogue", "one pass", config).task_id, timeout=300)
        assert task.status == TaskStatus.COMPLETED, task.error_message
        assert task.result["turns"] == 3
        assert {s["engine"] for s in task.result["speakers"].values()} == {"kokoro-script"}
        timing = json.loads(studio.store.file_path(task.task_id, "timing.json").read_text())  # type: ignore[union-attr]
        assert [turn["speaker"] for turn in timing] == list(TURNS) and all(t["estimated"] for t in timing)
        with zipfile.ZipFile(studio.store.file_path(task.task_id, "turns.zip")) as archive:  # type: ignore[arg-type]
            names = sorted(archive.namelist())
            assert names == ["0001_S1.wav", "0002_S2.wav", "0003_S3.wav"]
            for name, text in zip(names, TURNS.values(), strict=True):
                audio, rate = sf.read(io.BytesIO(archive.read(name)), dtype="float32")
                heard = transcriber.transcribe(audio, rate, language="en").text
                assert word_error_rate(text, heard) < 0.35, (name, heard)  # cut where the turn ends
    finally:
        studio.stop()
