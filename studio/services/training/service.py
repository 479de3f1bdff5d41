"""Training service: the "training" task kind, whose steps take raw recordings to a trained voice.

One task per voice. Its steps, in GPT-SoVITS order, run when the owner asks for them (one by one
from the wizard, or all remaining): dataset preparation (`dataset.py`: convert, slice, denoise, ASR,
then proofreading between steps, then features), training by the task's backend, export of the voice
into the studio (a library voice, or a Piper voice every tab can use), and a test that speaks new
sentences with it and measures them. Backends:

- `kokoro_fit` (CPU, minutes): fits a Kokoro style to the whole dataset (voice_fit.py) -> library voice.
- `piper` (Piper's Lightning VITS trainer as a subprocess; tiny preset on CPU, full on GPUs) -> ONNX.
- `gpt_sovits`: GPT-SoVITS's own scripts, once its code and models are under weights/.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from engines.base import EngineState
from engines.registry import EngineRegistry
from studio.errors import BadInput, Conflict
from studio.services.asr import Transcriber, word_error_rate
from studio.services.cloning import CloningService, fit_report
from studio.services.speaker import SpeakerEncoder, similarity
from studio.services.speech import SpeechRequest, SpeechService
from studio.services.training import dataset, features
from studio.services.training.common import StepReport, StepSkipped, Workspace
from studio.services.voice_fit import HELD_OUT, MODES
from studio.services.voices import VOICE_ID, VoiceLibrary
from studio.tasks.runner import TaskContext, TaskFailed, TaskKind

DatasetStep = Callable[[Workspace, dict[str, Any], StepReport], dict[str, Any]]
DATASET_STEPS: dict[str, DatasetStep] = {
    "convert_audio": dataset.convert_audio,
    "slice_audio": dataset.slice_audio,
    "denoise_audio": dataset.denoise_audio,
    # asr_transcribe (the studio's Whisper), then proofreading between steps (routes_training, the tab)
    "extract_text_features": features.extract_text_features,
    "extract_audio_features": features.extract_audio_features,
    "extract_speaker_vectors": features.extract_speaker_vectors,
    "extract_semantic_features": features.extract_semantic_features,
}
STEPS = (
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
    "export_voice",
    "test_inference",
)
PREPARE_STEPS = STEPS[:4]  # recordings -> transcribed clips; proofreading comes next
GPT_SOVITS_FEATURE_STEPS = ("extract_text_features", "extract_audio_features", "extract_semantic_features")
AFTER_PROOFREADING = (
    "extract_text_features",
    "train_sovits",
)  # these write metadata.csv from clips.json first
BACKENDS = ("kokoro_fit", "piper", "gpt_sovits")
REFERENCE_SECONDS = 90.0  # the Kokoro fit hears at most this much of the dataset (spread over all clips)
MIN_DATASET_SECONDS = 10.0


class TrainingService:
    """Runs the training task's steps and the proofreading, preflight and dataset import/export around them."""

    def __init__(
        self,
        speech: SpeechService,
        library: VoiceLibrary,
        cloning: CloningService,
        transcriber: Transcriber,
        registry: EngineRegistry,
        piper_voices_dir: Path,
        max_upload_bytes: int,
    ) -> None:
        self.speech = speech
        self.library = library
        self.cloning = cloning
        self.transcriber = transcriber
        self.registry = registry
        self.piper_voices_dir = piper_voices_dir
        self.max_upload_bytes = max_upload_bytes
        self._encoder = SpeakerEncoder()

    def task_kind(self) -> TaskKind:
        return TaskKind(
            "training", resumable=True, steps=STEPS, run_step=self._run_step, check_config=self.check_config
        )

    def check_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The task's config, checked at creation: which backend, and the name the voice will get (free
        now, so a name clash is found before training, not at export)."""
        backend = config.get("backend", "kokoro_fit")
        if backend not in BACKENDS:
            raise BadInput(
                f"config.backend must be one of {', '.join(BACKENDS)} (got {backend!r})", "bad_backend"
            )
        voice_name = str(config.get("voice_name", "")).strip().lower()
        if not VOICE_ID.match(voice_name):
            raise BadInput(
                "config.voice_name must be 1-64 characters of a-z, 0-9, '_' or '-' (the trained voice's id)",
                "bad_voice_name",
            )
        taken = (
            voice_name in self.library.reserved_ids
            or self.library.get(voice_name) is not None
            or (self.piper_voices_dir / f"{voice_name}.onnx").exists()
        )
        if taken:
            raise Conflict(
                f"a voice '{voice_name}' exists already: choose another voice_name, or delete that voice first",
                "voice_exists",
            )
        return config | {"backend": backend, "voice_name": voice_name}

    # ---- steps -----------------------------------------------------------------------------------
    def _run_step(self, context: TaskContext, step: str, params: dict[str, Any]) -> dict[str, Any]:
        workspace = Workspace(context.folder)
        backend = context.config["backend"]
        if step in AFTER_PROOFREADING:
            dataset.write_metadata(workspace, {}, context)
        if backend == "gpt_sovits" and step in GPT_SOVITS_FEATURE_STEPS:
            return self._gpt_sovits(step, workspace, params, context)  # its own scripts and models
        if step == "asr_transcribe":
            return dataset.asr_transcribe(workspace, params, context, self.transcriber)
        if step in DATASET_STEPS:
            return DATASET_STEPS[step](workspace, params | {"backend": backend}, context)
        if step == "train_sovits":
            return self._train(workspace, backend, params, context)
        if step == "train_gpt":
            if backend != "gpt_sovits":
                raise StepSkipped(f"{backend} has no separate GPT (text-to-semantic) stage: GPT-SoVITS only")
            return self._gpt_sovits(step, workspace, params, context)
        if step == "export_voice":
            return self._export(workspace, backend, context)
        return self._test(workspace, params, context)

    def _train(
        self, workspace: Workspace, backend: str, params: dict[str, Any], context: TaskContext
    ) -> dict[str, Any]:
        problems = self.preflight(workspace, backend, params)
        if problems:
            raise TaskFailed("preflight: " + "; ".join(problems))
        if backend == "kokoro_fit":
            return self._fit_kokoro(workspace, params, context)
        if backend == "piper":
            from studio.services.training import piper_backend

            preset = piper_backend.settings(params).preset
            lease = context.lease(int(params.get("devices", 1)), exclusive=True) if preset.gpu else None
            return piper_backend.train(workspace, params, context, lease, self.registry.weights_dir)
        return self._gpt_sovits("train_sovits", workspace, params, context)

    def _fit_kokoro(
        self, workspace: Workspace, params: dict[str, Any], context: TaskContext
    ) -> dict[str, Any]:
        mode = str(params.get("mode", "thorough"))
        if mode not in MODES:
            raise TaskFailed(f"params.mode must be one of {', '.join(MODES)} (got {mode!r})")
        reference, rate = self._dataset_reference(workspace)
        train = workspace.root / "train"
        train.mkdir(exist_ok=True)
        sf.write(train / "reference.wav", reference, rate, subtype="PCM_16")
        context.log(f"fitting a Kokoro voice ({mode}) to {len(reference) / rate:.1f} s of the dataset")

        def progress(percent: float, step: str, curve: list[tuple[int, float]]) -> None:
            (train / "curve.json").write_text(json.dumps(curve))
            context.step_progress(percent / 100)

        result = self.cloning.fitter.fit(reference, rate, mode, progress=progress)
        np.save(train / "style.npy", result.style)
        report = fit_report(result, mode)
        (train / "fit.json").write_text(json.dumps(report, indent=2))
        context.log(
            f"held-out similarity {report['similarity']:.3f} vs nearest built-in {report['baseline_voice']} "
            f"{report['baseline_similarity']:.3f}; WER {report['wer']:.2f} vs {report['baseline_wer']:.2f}"
        )
        return report

    def _export(self, workspace: Workspace, backend: str, context: TaskContext) -> dict[str, Any]:
        voice_id = context.config["voice_name"]
        if backend == "piper":
            from studio.services.training import piper_backend

            params = {"voice_name": voice_id}
            exported = piper_backend.export(workspace, params, context, self.piper_voices_dir)
            self.registry.unload("piper")  # a re-exported voice must not be spoken from the old cached model
            return exported | {"engine": "piper"}
        if backend == "gpt_sovits":
            raise StepSkipped("GPT-SoVITS voices are used through its own weights folder (nothing to export)")
        style_file = workspace.root / "train" / "style.npy"
        if not style_file.exists():
            raise TaskFailed("no fitted voice yet: run train_sovits first")
        existing = self.library.get(voice_id)
        if existing is not None:
            if existing.fit.get("trained_by") != context.task_id:
                raise TaskFailed(
                    f"a library voice '{voice_id}' exists already: delete it, or create a training task "
                    "with another voice_name"
                )
            self.library.delete(voice_id)  # this task's own earlier export: replaced
        reference = (workspace.root / "train" / "reference.wav").read_bytes()
        self.library.add(
            voice_id,
            reference,
            "reference.wav",
            self.max_upload_bytes,
            description=f"trained from a dataset (training task {context.task_id})",
        )
        fit = json.loads((workspace.root / "train" / "fit.json").read_text())
        self.library.save_style(voice_id, np.load(style_file), fit | {"trained_by": context.task_id})
        self.cloning.write_preview(voice_id)
        context.log(f"library voice '{voice_id}' saved: every tab can use it now")
        return {"voice_id": voice_id, "engine": "kokoro"}

    def _test(self, workspace: Workspace, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        """Speak sentences the training never saw with the new voice; Whisper's transcript and the
        similarity to the dataset speaker say how it went."""
        task_result = context.result_so_far()
        exported = task_result.get("steps", {}).get("export_voice", {})
        voice_id = exported.get("voice_id")
        if not voice_id:
            raise TaskFailed("no exported voice yet: run export_voice first")
        sentences = [str(s) for s in params.get("sentences") or HELD_OUT][:5]
        reference, rate = self._dataset_reference(workspace)
        target = self._encoder.embed(reference, rate)
        workspace.test.mkdir(exist_ok=True)
        rows = []
        for index, text in enumerate(sentences):
            speech = self.speech.synthesize(
                SpeechRequest(text=text, voice=voice_id, engine=exported.get("engine"))
            )
            name = f"test_{index + 1}.wav"
            sf.write(workspace.test / name, speech.audio, speech.sample_rate, subtype="PCM_16")
            heard = self.transcriber.transcribe(speech.audio, speech.sample_rate).text
            rows.append(
                {
                    "text": text,
                    "file": f"test/{name}",
                    "transcript": heard,
                    "wer": round(word_error_rate(text, heard), 3),
                    "similarity": round(
                        similarity(self._encoder.embed(speech.audio, speech.sample_rate), target), 4
                    ),
                }
            )
            context.log(f"test {index + 1}: similarity {rows[-1]['similarity']:.3f}, heard {heard!r}")
            context.step_progress((index + 1) / len(sentences))
        return {
            "voice_id": voice_id,
            "sentences": rows,
            "mean_similarity": round(float(np.mean([r["similarity"] for r in rows])), 4),
            "mean_wer": round(float(np.mean([r["wer"] for r in rows])), 3),
        }

    def _gpt_sovits(
        self, step: str, workspace: Workspace, params: dict[str, Any], context: TaskContext
    ) -> dict[str, Any]:
        engine = self.registry.engine("gpt_sovits") if "gpt_sovits" in self.registry.names() else None
        status = engine.status() if engine else None
        if engine is None or status is None or status.state not in (EngineState.READY, EngineState.LOADED):
            missing = "; ".join(status.missing) if status else "its adapter is not registered"
            raise TaskFailed(f"GPT-SoVITS is not set up here: {missing}")
        from studio.services.training import piper_backend

        lease = context.lease(1, exclusive=True)
        command = engine.step_command(step, workspace, params, lease)  # type: ignore[attr-defined]
        result = piper_backend.run_logged(command, context, cwd=engine.code_dir, lease=lease)  # type: ignore[attr-defined]
        return result | engine.finish_step(step, workspace)  # type: ignore[attr-defined]

    # ---- around the steps ------------------------------------------------------------------------
    def preflight(self, workspace: Workspace, backend: str, params: dict[str, Any]) -> list[str]:
        """What would make training fail, found before it starts, each with what to change."""
        clips = [clip for clip in dataset.load_clips(workspace) if not clip.get("dropped")]
        seconds = sum(float(clip["duration"]) for clip in clips)
        problems = []
        if seconds < MIN_DATASET_SECONDS:
            problems.append(
                f"the dataset has {seconds:.1f} s of kept speech; at least {MIN_DATASET_SECONDS:.0f} s is needed "
                "(upload more recordings, or keep more clips when proofreading)"
            )
        free_gb = shutil.disk_usage(workspace.root).free / 2**30
        if free_gb < 0.5:
            problems.append(f"only {free_gb:.2f} GB free on the data disk; free at least 0.5 GB")
        if backend == "piper" and not problems:
            from studio.services.training import piper_backend

            problems += piper_backend.preflight(
                workspace, params, self.registry.allocator.devices, self.registry.weights_dir
            )
        return problems

    def _dataset_reference(self, workspace: Workspace) -> tuple[np.ndarray, int]:
        """The kept clips joined (with short gaps), at most REFERENCE_SECONDS spread over the dataset."""
        clips = [clip for clip in dataset.load_clips(workspace) if not clip.get("dropped")]
        if not clips:
            raise TaskFailed(
                "the dataset has no kept clips: run the dataset steps (or import a dataset) first"
            )
        total = sum(float(clip["duration"]) for clip in clips)
        stride = max(1, int(np.ceil(total / REFERENCE_SECONDS)))
        pieces, rate = [], 0
        for clip in clips[::stride]:
            audio, rate = sf.read(workspace.dataset / clip["file"], dtype="float32")
            pieces += [audio, np.zeros(int(0.2 * rate), np.float32)]
        return np.concatenate(pieces), rate

    def export_dataset(self, workspace: Workspace) -> bytes:
        """The kept clips as a Piper dataset zip (metadata.csv, wavs/, clips.json)."""
        dataset.load_clips(workspace)  # 404 with what to do when there is no dataset yet
        buffer = io.BytesIO()
        dataset.export_piper_dataset(workspace, buffer)
        return buffer.getvalue()

    def import_dataset(self, workspace: Workspace, data: bytes) -> list[dict[str, Any]]:
        """A Piper dataset zip made elsewhere becomes this task's dataset (the dataset steps can be skipped)."""
        dataset.import_piper_dataset(workspace, io.BytesIO(data))
        return dataset.load_clips(workspace)
