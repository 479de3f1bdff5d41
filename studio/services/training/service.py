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
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import soundfile as sf
from pathvalidate import sanitize_filename
from pydantic import ConfigDict, Field

from engines.base import EngineUnavailable, StepTrainer
from engines.registry import EngineRegistry
from engines.text import LANGUAGE_NAMES, base_language, canonical_language, detect_language
from studio.errors import BadInput, Conflict, TooLarge
from studio.services.asr import Transcriber, transcript_error_rate
from studio.services.cloning import CloningService, fit_report
from studio.services.speaker import SpeakerEncoder, similarity
from studio.services.speech import SpeechRequest, SpeechService
from studio.services.training import dataset, features, piper_backend
from studio.services.training.common import StepReport, StepSkipped, Workspace
from studio.services.voice_fit import HELD_OUT_BY_LANGUAGE, MODES
from studio.services.voices import VOICE_ID, VoiceLibrary
from studio.tasks.configs import StepwiseConfig
from studio.tasks.records import Task
from studio.tasks.runner import TaskContext, TaskFailed, TaskKind, TaskRunner, step_params

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
Backend = Literal["kokoro_fit", "piper", "gpt_sovits"]
BACKENDS: tuple[str, ...] = get_args(Backend)


class TrainingConfig(StepwiseConfig):
    """A "training" task: recordings -> a voice of `backend`, step by step. Also takes the GPT-SoVITS
    training service's keys (exp_name, language, batch_size, epochs_s1, epochs_s2, gpu_id), which
    `prepare_task` maps onto the voice name, the language and `step_defaults`; other keys are kept
    (and noted as unknown), as that service's clients send more."""

    model_config = ConfigDict(strict=True, extra="allow")

    backend: Backend = "kokoro_fit"
    voice_name: str | None = Field(None, description="the trained voice's id (default: from exp_name)")
    language: str | None = Field(None, description="the recordings' language (any spelling; auto: per clip)")
    exp_name: str | None = None
    batch_size: int | None = None
    epochs_s1: int | None = None
    epochs_s2: int | None = None
    gpu_id: str | int | None = None


UPLOAD_EXTENSIONS = (*dataset.INPUT_EXTENSIONS, ".zip")  # a task is made from recordings, or a dataset zip
PIPER_PRESETS = piper_backend.PRESETS  # what the Training tab offers for the piper backend
PIPER_PRECISIONS = piper_backend.PRECISIONS
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
        runner: TaskRunner,
    ) -> None:
        self.speech = speech
        self.library = library
        self.cloning = cloning
        self.transcriber = transcriber
        self.registry = registry
        self.piper_voices_dir = piper_voices_dir
        self.max_upload_bytes = max_upload_bytes
        self.runner = runner  # to make tasks (with their uploads) and undo them
        self.store = runner.store
        self._encoder = SpeakerEncoder()

    def task_kind(self) -> TaskKind:
        return TaskKind(
            "training",
            config=TrainingConfig,
            resumable=True,
            steps=STEPS,
            run_step=self._run_step,
            prepare=self.prepare_task,
            needs={"test_inference": ("export_voice",)},  # GPT-SoVITS's client has no export step
        )

    def prepare_task(self, config: TrainingConfig) -> TrainingConfig:
        """The task's config, checked at creation: which backend, and the name the voice will get (free
        now, so a name clash is found before training, not at export).

        The GPT-SoVITS training service's keys (`exp_name`, `language`, `batch_size`, `epochs_s1`,
        `epochs_s2`, `gpu_id`) become the voice name, `config.language` and `step_defaults` (the
        params the backend's steps start from; a step's own params override them). The task's
        result and log say which keys were mapped, which this backend has no use for, and which
        are unknown (those stay in the config)."""
        given = config.model_dump(exclude_none=True)
        backend = config.backend
        notes: dict[str, dict[str, str]] = {"mapped": {}, "not_applicable": {}}
        voice_name = _voice_name(given, notes)
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
        language, defaults = _language(given, backend, notes)
        for step, params in _gpt_sovits_params(given, backend, notes).items():
            defaults[step] = defaults.get(step, {}) | params
        for step, params in _given_step_defaults(given).items():  # given per step: they win
            defaults[step] = defaults.get(step, {}) | params
        unknown = sorted(config.model_extra or {})
        notes["unknown"] = dict.fromkeys(unknown, "kept in the config; the training task does not use it")
        checked = config.model_copy(
            update={"voice_name": voice_name, "language": language, "step_defaults": defaults or None}
        )
        return checked.with_notes({heading: keys for heading, keys in notes.items() if keys})

    # ---- steps -----------------------------------------------------------------------------------
    def _run_step(self, context: TaskContext, step: str, params: dict[str, Any]) -> dict[str, Any]:
        workspace = Workspace(context.folder)
        backend = context.config["backend"]
        if step in AFTER_PROOFREADING:
            dataset.write_metadata(workspace, {}, context)
        if backend == "gpt_sovits" and step in GPT_SOVITS_FEATURE_STEPS:
            return self._gpt_sovits(step, workspace, params, context)  # its own scripts and models
        if step == "asr_transcribe":
            language = params.get("language") or context.config.get("language")  # the task's, unless given
            return dataset.asr_transcribe(
                workspace, params | {"language": language}, context, self.transcriber
            )
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

        language = self._dataset_language(workspace, params, context)
        result = self.cloning.fit(reference, rate, mode, progress, language)
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
            if self.library.get(voice_id) is not None:
                raise TaskFailed(
                    f"a library voice '{voice_id}' exists already: train with another voice_name"
                )
            engine = self._gpt_sovits_engine()
            language = canonical_language(context.config.get("language"))  # as its steps had it (en: auto)
            params = {"language": base_language(language) if language else "en"}
            try:
                exported = engine.export_voice(workspace, voice_id, params, context.task_id)
            except (FileNotFoundError, FileExistsError, ValueError) as error:
                raise TaskFailed(str(error)) from None
            self.registry.unload(engine.info.name)  # a re-exported voice must not keep the old weights
            context.log(f"GPT-SoVITS voice '{voice_id}' saved: every tab can use it now")
            return exported
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

    @staticmethod
    def _dataset_language(workspace: Workspace, params: dict[str, Any], context: TaskContext) -> str:
        """The recordings' language: the step's or the task's, else the dataset's by the script of its
        (proofread) transcripts."""
        language = canonical_language(params.get("language") or context.config.get("language"))
        if language is None:
            kept = [clip["text"] for clip in dataset.load_clips(workspace) if not clip.get("dropped")]
            language = detect_language(" ".join(kept))
        return language

    def _test(self, workspace: Workspace, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        """Speak sentences the training never saw with the new voice, in the task's language (auto: the
        dataset's, by its transcripts' script); Whisper's transcript (WER in English, CER in Chinese and
        Japanese) and the similarity to the dataset speaker say how it went."""
        task_result = context.result_so_far()
        exported = task_result.get("steps", {}).get("export_voice", {})
        voice_id = exported.get("voice_id")
        if not voice_id:
            raise TaskFailed("no exported voice yet: run export_voice first")
        language = self._dataset_language(workspace, params, context)
        given = params.get("sentences") or HELD_OUT_BY_LANGUAGE.get(base_language(language))
        if not given:
            raise TaskFailed(
                f"the studio has no test sentences in {LANGUAGE_NAMES.get(language, language)}: give this step's"
                " 'sentences' in that language (the voice is exported and usable already)"
            )
        sentences = [str(s) for s in given][:5]
        reference, rate = self._dataset_reference(workspace)
        target = self._encoder.embed(reference, rate)
        workspace.test.mkdir(exist_ok=True)
        rows = []
        for index, text in enumerate(sentences):
            speech = self.speech.synthesize(
                SpeechRequest(text=text, voice=voice_id, engine=exported.get("engine"), language=language)
            )
            name = f"test_{index + 1}.wav"
            sf.write(workspace.test / name, speech.audio, speech.sample_rate, subtype="PCM_16")
            heard = self.transcriber.transcribe(speech.audio, speech.sample_rate, language).text
            rows.append(
                {
                    "text": text,
                    "file": f"test/{name}",
                    "transcript": heard,
                    "wer": round(transcript_error_rate(text, heard, language), 3),
                    "similarity": round(
                        similarity(self._encoder.embed(speech.audio, speech.sample_rate), target), 4
                    ),
                }
            )
            context.log(f"test {index + 1}: similarity {rows[-1]['similarity']:.3f}, heard {heard!r}")
            context.step_progress((index + 1) / len(sentences))
        return {
            "voice_id": voice_id,
            "language": language,
            "sentences": rows,
            "mean_similarity": round(float(np.mean([r["similarity"] for r in rows])), 4),
            "mean_wer": round(float(np.mean([r["wer"] for r in rows])), 3),
        }

    def _gpt_sovits(
        self, step: str, workspace: Workspace, params: dict[str, Any], context: TaskContext
    ) -> dict[str, Any]:
        engine = self._gpt_sovits_engine()
        lease = context.lease(1, exclusive=True)
        command = engine.step_command(step, workspace, params, lease)
        result = piper_backend.run_logged(command, context, cwd=engine.code_dir, lease=lease)
        return result | engine.finish_step(step, workspace)

    def _gpt_sovits_engine(self) -> StepTrainer:
        try:
            return self.registry.capable(StepTrainer, "gpt_sovits")  # the backend is that engine
        except (KeyError, EngineUnavailable) as error:
            raise TaskFailed(f"GPT-SoVITS is not set up here: {error.args[0]}") from None

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

    def import_dataset(self, workspace: Workspace, data: bytes) -> list[dict[str, Any]]:
        """A Piper dataset zip made elsewhere becomes this task's dataset (the dataset steps can be skipped)."""
        dataset.import_piper_dataset(workspace, io.BytesIO(data))
        return dataset.load_clips(workspace)

    # ---- a training task's dataset, by task id (the REST routes) ---------------------------------
    def workspace(self, task_id: str) -> Workspace:
        """The file layout of training task `task_id`, in its task folder."""
        return Workspace(self.store.folder(task_id))

    def clips(self, task_id: str, low_confidence_first: bool = False) -> list[dict[str, Any]]:
        """The task's clips for proofreading: the least certain transcripts first, or in recording order."""
        return dataset.load_clips(self.workspace(task_id), low_confidence_first=low_confidence_first)

    def edit_clips(self, task_id: str, edits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply proofreading edits (`{"id", "text"?, "dropped"?}` each) to the task's clips, metadata.csv
        following; returns every clip after them."""
        return dataset.update_clips(self.workspace(task_id), edits)

    def task_preflight(self, task: Task) -> list[str]:
        """`preflight` for a training task, with its backend and the params its train step would run with."""
        params = step_params(task.config, "train_sovits")
        return self.preflight(self.workspace(task.task_id), task.config["backend"], params)

    def export_task_dataset(self, task_id: str) -> bytes:
        """The task's kept clips as a Piper dataset zip (metadata.csv, wavs/, clips.json)."""
        workspace = self.workspace(task_id)
        dataset.load_clips(workspace)  # 404 with what to do when there is no dataset yet
        buffer = io.BytesIO()
        dataset.export_piper_dataset(workspace, buffer)
        return buffer.getvalue()

    def import_task_dataset(self, task_id: str, data: bytes) -> list[dict[str, Any]]:
        """`import_dataset` into the task's folder, logged on the task; returns the imported clips."""
        clips = self.import_dataset(self.workspace(task_id), data)
        self.store.append_log(task_id, f"imported a Piper dataset: {len(clips)} clips")
        return clips

    # ---- a training task from uploaded files, and the files its owner sees (the Training tab) ----
    def create_task(
        self, config: TrainingConfig, task_name: str, uploads: list[Path], owner: str
    ) -> tuple[Task, bool]:
        """A training task made from uploaded files: recordings of one speaker go to its `inputs/`, or
        one Piper dataset zip becomes its dataset. The uploads are checked first; if saving or
        importing them fails, the task is deleted (no half-made task left behind). Returns the task
        and whether a dataset was imported."""
        self.check_uploads(uploads)
        task = self.runner.submit("training", task_name, config, owner)
        imported = uploads[0].suffix.lower() == ".zip"  # then it is the only upload
        try:
            if imported:
                self.import_task_dataset(task.task_id, uploads[0].read_bytes())
            else:
                self.save_inputs(task.task_id, uploads)
        except Exception:
            self.runner.delete(task.task_id)
            raise
        return task, imported

    def check_uploads(self, uploads: list[Path]) -> None:
        """Raise what is wrong with the files a training task would be made from: none, a type that is
        not a recording or a dataset zip, a zip beside other files, a file over the upload limit."""
        if not uploads:
            raise BadInput(
                "Add recordings (wav, mp3, flac, m4a, ogg, mp4) or a Piper dataset zip first.", "no_uploads"
            )
        wrong = [p.name for p in uploads if p.suffix.lower() not in UPLOAD_EXTENSIONS]
        if wrong:
            raise BadInput(
                f"{wrong[0]} is not a recording or a dataset zip ({', '.join(UPLOAD_EXTENSIONS)}).",
                "bad_upload_type",
            )
        if len(uploads) > 1 and any(p.suffix.lower() == ".zip" for p in uploads):
            raise BadInput("Upload either recordings or one Piper dataset zip, not both.", "mixed_uploads")
        large = [p.name for p in uploads if p.stat().st_size > self.max_upload_bytes]
        if large:
            raise TooLarge(
                f"{large[0]} is larger than the {self.max_upload_bytes // 2**20} MB upload limit.",
                "upload_too_large",
            )

    def save_inputs(self, task_id: str, uploads: list[Path]) -> None:
        """Copy recordings into the task's `inputs/` under sanitized, distinct names, each logged."""
        inputs = self.workspace(task_id).inputs
        inputs.mkdir(parents=True, exist_ok=True)
        for upload in uploads:
            name = sanitize_filename(upload.name, replacement_text="_").lstrip(".") or "recording"
            target, n = inputs / name, 2
            while target.exists():
                target, n = inputs / f"{Path(name).stem}_{n}{Path(name).suffix}", n + 1
            shutil.copyfile(upload, target)
            self.store.append_log(task_id, f"uploaded inputs/{target.name} ({target.stat().st_size} bytes)")

    def params_preflight(self, task: Task, params: dict[str, Any]) -> list[str]:
        """`preflight` for a training task with the train params given (the tab's), not its config's."""
        return self.preflight(self.workspace(task.task_id), task.config["backend"], params)

    def clip_file(self, task_id: str, clip: dict[str, Any]) -> Path | None:
        """Where one of the task's clips (as `clips` gives it) is; None while it has no such file."""
        path = self.workspace(task_id).dataset / clip["file"]
        return path if path.is_file() else None

    def curve_file(self, task_id: str, backend: str) -> tuple[Path, str | None] | None:
        """The live curve a backend's training writes (its file, and the key of the value in its rows;
        None: [x, y] pairs); None for a backend that writes none."""
        curves = {"kokoro_fit": ("curve.json", None), "piper": ("loss.json", "loss_g")}
        if backend not in curves:
            return None
        name, key = curves[backend]
        return self.workspace(task_id).root / "train" / name, key


# ---- the task's config (check_config) -----------------------------------------------------------------
GPT_SOVITS_KEYS = ("exp_name", "language", "batch_size", "epochs_s1", "epochs_s2", "gpu_id")
GPU_IDS = re.compile(r"^[0-9]+(-[0-9]+)*$")  # GPT-SoVITS's gpu_id: "0", "0-1-2"
GPT_SOVITS_STEPS = (*GPT_SOVITS_FEATURE_STEPS, "train_sovits", "train_gpt")  # each reads params.language
PIPER_ESPEAK = {"en-us": "en-us", "en-gb": "en-gb-x-rp", "zh": "cmn", "ja": "ja"}  # Piper's phonemizer voices
# A GPT-SoVITS numeric key -> per backend: the step params it becomes, or why the backend has no use for it.
GPT_SOVITS_PARAMS: dict[str, dict[str, tuple[tuple[str, str], ...] | str]] = {
    "batch_size": {
        "kokoro_fit": "the Kokoro fit searches styles one trial at a time: it has no batches",
        "piper": (("train_sovits", "batch_size"),),
        "gpt_sovits": (("train_sovits", "batch_size"), ("train_gpt", "batch_size")),
    },
    "epochs_s2": {
        "kokoro_fit": "the Kokoro fit has no epochs: its length is train_sovits params.mode (quick, thorough)",
        "piper": "Piper trains for a number of steps, not epochs: give train_sovits params.max_steps",
        "gpt_sovits": (("train_sovits", "sovits_epochs"),),
    },
    "epochs_s1": {
        "kokoro_fit": "kokoro_fit has no GPT stage (train_gpt is skipped)",
        "piper": "piper has no GPT stage (train_gpt is skipped)",
        "gpt_sovits": (("train_gpt", "gpt_epochs"),),
    },
    "gpu_id": {
        "kokoro_fit": "kokoro_fit runs on the CPU",
        "piper": (("train_sovits", "devices"),),  # how many GPUs the GPU preset leases
        "gpt_sovits": "each GPT-SoVITS step leases one free GPU",
    },
}


def _voice_name(config: dict[str, Any], notes: dict[str, dict[str, str]]) -> str:
    """`voice_name`, or GPT-SoVITS's `exp_name` made into a voice id (lower case, other characters '_')."""
    if "voice_name" in config or "exp_name" not in config:
        voice_name = str(config.get("voice_name", "")).strip().lower()
        if not VOICE_ID.match(voice_name):
            raise BadInput(
                "config.voice_name (or GPT-SoVITS's exp_name) must be 1-64 characters of a-z, 0-9, '_' or '-' "
                "(the trained voice's id)",
                "bad_voice_name",
            )
        if "exp_name" in config:
            notes["not_applicable"]["exp_name"] = f"voice_name '{voice_name}' names the voice"
        return voice_name
    exp_name = str(config["exp_name"])
    voice_name = re.sub(r"[^a-z0-9_-]+", "_", exp_name.strip().lower()).strip("_-")
    if not VOICE_ID.match(voice_name):
        raise BadInput(
            f"config.exp_name {exp_name!r} makes no valid voice id (got {voice_name!r}): a voice id is 1-64 "
            "characters of a-z, 0-9, '_' or '-', starting with a letter or digit; give config.voice_name",
            "bad_voice_name",
        )
    notes["mapped"]["exp_name"] = f"voice_name '{voice_name}'"
    return voice_name


def _language(
    config: dict[str, Any], backend: str, notes: dict[str, dict[str, str]]
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """The task's language as the studio names it ("auto" kept), and the step params it sets."""
    if "language" not in config:
        return None, {}
    try:
        code = canonical_language(config["language"])
    except ValueError as error:
        raise BadInput(f"config.language: {error}", "bad_language") from None
    if code is None:
        notes["mapped"]["language"] = "config.language 'auto' (each clip's language is detected)"
        return "auto", {}
    steps: tuple[str, ...] = ()
    if backend == "gpt_sovits":
        steps, param, value = GPT_SOVITS_STEPS, "language", base_language(code)
    elif backend == "piper":
        steps, param, value = ("extract_text_features", "train_sovits"), "espeak_voice", PIPER_ESPEAK[code]
    where = "".join(f"; {step}.{param} = {value!r}" for step in steps)
    notes["mapped"]["language"] = f"config.language '{code}' (asr_transcribe, test_inference){where}"
    return code, {step: {param: value} for step in steps}


def _gpt_sovits_params(
    config: dict[str, Any], backend: str, notes: dict[str, dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """GPT-SoVITS's batch size, epochs and GPUs as this backend's step params (see GPT_SOVITS_PARAMS)."""
    defaults: dict[str, dict[str, Any]] = {}
    for key, by_backend in GPT_SOVITS_PARAMS.items():
        if key not in config:
            continue
        value = _gpu_count(config[key]) if key == "gpu_id" else _positive_int(key, config[key])
        target = by_backend[backend]
        if isinstance(target, str):
            notes["not_applicable"][key] = target
            continue
        for step, param in target:
            defaults.setdefault(step, {})[param] = value
        where = ", ".join(f"{step}.{param} = {value}" for step, param in target)
        notes["mapped"][key] = where + (
            " (a count: the allocator picks which GPUs)" if key == "gpu_id" else ""
        )
    return defaults


def _positive_int(key: str, value: Any) -> int:
    """A count as GPT-SoVITS's client sends it (16 or "16"), at least 1."""
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdecimal()) or int(text) < 1:
        raise BadInput(
            f"config.{key} must be a whole number of 1 or more (got {value!r})", "bad_training_param"
        )
    return int(text)


def _gpu_count(value: Any) -> int:
    """How many GPUs GPT-SoVITS's `gpu_id` ("0", "0-1-2") names."""
    text = str(value).strip()
    if isinstance(value, bool) or not GPU_IDS.match(text):
        raise BadInput(
            f"config.gpu_id must be GPU indices joined by '-', like '0' or '0-1-2' (got {value!r})",
            "bad_training_param",
        )
    return len(set(text.split("-")))


def _given_step_defaults(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`config.step_defaults` as given: {step name: params}."""
    given = config.get("step_defaults", {})
    if not isinstance(given, dict) or not all(isinstance(params, dict) for params in given.values()):
        raise BadInput("config.step_defaults must map step names to their params", "bad_step_defaults")
    unknown = [step for step in given if step not in STEPS]
    if unknown:
        raise BadInput(
            f"config.step_defaults: unknown step '{unknown[0]}'; steps: {', '.join(STEPS)}", "unknown_step"
        )
    return given
