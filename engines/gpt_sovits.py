"""GPT-SoVITS v2 (RVC-Boss, MIT): the training wizard's steps run its own scripts, and the voices it
trains are spoken through its own inference code, in its worker.

GPT-SoVITS is not installable from a registry and its requirements clash with the studio's, so it
runs the user's clone on the engine's own pinned environment (`engines/envs/gpt-sovits.txt`):
- **Training**: each wizard step is one of its scripts, run exactly as its `webui.py` runs them
  (environment variables for the dataset scripts, a JSON / YAML config for the two trainers), from
  the clone's folder (they read several paths relative to it). `step_command()` builds them, the
  training service runs them under the supervisor, `finish_step()` merges the part files the web
  UI merges, and `export_voice()` makes the trained weights a studio voice.
- **Speaking**: an exported voice (`<voices_dir>/<voice>/voice.json`: its GPT and SoVITS weights and
  a 3-10 s reference clip with its transcript) is spoken sentence by sentence by upstream's
  `TTS_infer_pack.TTS` in the worker, so it answers in every tab and route like any voice.

Layout it expects (the v2 release; nothing is ever downloaded by the studio):

    weights/GPT-SoVITS/
    ├── code/                   git clone https://github.com/RVC-Boss/GPT-SoVITS (writable: its scripts
    │   └── GPT_SoVITS/         write caches beside themselves and temporary files where they run)
    │       ├── prepare_datasets/1-get-text.py, 2-get-hubert-wav32k.py, 3-get-semantic.py
    │       ├── s2_train.py (SoVITS), s1_train.py (GPT), configs/s2.json, configs/s1longer-v2.yaml
    │       ├── text/G2PWModel/                   Chinese polyphone model (its README's G2PWModel zip)
    │       └── pretrained_models/                from huggingface.co/lj1995/GPT-SoVITS
    │           ├── chinese-roberta-wwm-ext-large/    BERT (text features)
    │           ├── chinese-hubert-base/              HuBERT (audio features)
    │           ├── gsv-v2final-pretrained/           s2G2333k.pth, s2D2333k.pth (SoVITS G and D),
    │           │                                     s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt (GPT)
    │           └── fast_langdetect/lid.176.bin       (speaking Chinese: its text splitter's model)
    └── nltk_data/              cmudict + averaged_perceptron_tagger_eng (g2p_en fetches them otherwise)

The dataset steps read the studio's dataset (`dataset/metadata.csv` + `dataset/wavs/`) through a
GPT-SoVITS `.list` file this module writes (`<wav>|<speaker>|<language>|<text>`); features and the
trainers' own checkpoints go to `_work/gpt_sovits/`, the trained weights to `train/SoVITS_weights/`
and `train/GPT_weights/`. Languages: Chinese and English (its Japanese front end needs pyopenjtalk,
which downloads its dictionary at first use; Korean and Cantonese packages are not in its environment).

Tested on tiny random-weight models built with upstream's classes in this layout
(tests/test_gpt_sovits_worker.py: the dataset steps, both trainers, export, and the voice through
the OpenAI route); status and the commands and configs built in tests/test_gpt_sovits.py.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import (
    Capability,
    EngineInfo,
    EngineUnavailable,
    Requirement,
    SynthesisOptions,
    VoiceInfo,
)
from engines.clone_code import ffmpeg_on_path
from engines.gpu import GpuAllocator, Lease
from engines.text import base_language
from engines.worker import HEAVY_IDLE_EXIT_S, WorkerEngine

if TYPE_CHECKING:
    from studio.services.training.common import Workspace

FOLDER = "GPT-SoVITS"
CODE = f"{FOLDER}/code"
PACKAGE = f"{CODE}/GPT_SoVITS"
PRETRAINED = f"{PACKAGE}/pretrained_models"
BERT = f"{PRETRAINED}/chinese-roberta-wwm-ext-large"
HUBERT = f"{PRETRAINED}/chinese-hubert-base"
V2_PRETRAINED = f"{PRETRAINED}/gsv-v2final-pretrained"
S2G = f"{V2_PRETRAINED}/s2G2333k.pth"
S2D = f"{V2_PRETRAINED}/s2D2333k.pth"
S1 = f"{V2_PRETRAINED}/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
G2PW = f"{PACKAGE}/text/G2PWModel"
NLTK_DATA = f"{FOLDER}/nltk_data"
LANGDETECT = f"{PRETRAINED}/fast_langdetect/lid.176.bin"
S2_CONFIG = "GPT_SoVITS/configs/s2.json"  # relative to the code folder, as the scripts use them
S1_CONFIG = "GPT_SoVITS/configs/s1longer-v2.yaml"
VERSION = "v2"
# The wizard's steps and the GPT-SoVITS script that does each (relative to the code folder).
STEP_SCRIPTS = {
    "extract_text_features": "GPT_SoVITS/prepare_datasets/1-get-text.py",
    "extract_audio_features": "GPT_SoVITS/prepare_datasets/2-get-hubert-wav32k.py",
    "extract_semantic_features": "GPT_SoVITS/prepare_datasets/3-get-semantic.py",
    "train_sovits": "GPT_SoVITS/s2_train.py",
    "train_gpt": "GPT_SoVITS/s1_train.py",
}
LANGUAGES = ("zh", "en")
REFERENCE_SECONDS = (3.0, 10.0)  # TTS_infer_pack refuses a reference clip outside 3-10 s
CODE_REPO = "https://github.com/RVC-Boss/GPT-SoVITS"
MODEL_REPO = "lj1995/GPT-SoVITS"

_CLONE = f"git clone {CODE_REPO} weights/{CODE}"
_DOWNLOAD = f"huggingface-cli download {MODEL_REPO} --local-dir weights/{PRETRAINED}"
_G2PW = (  # XXXXRT is the real account name, as upstream's README links it
    "G2PWModel.zip from huggingface.co/XXXXRT/GPT-SoVITS-Pretrained, unzipped and renamed to "
    f"weights/{G2PW} (its README's step for Chinese)"
)
_NLTK = f"python -m nltk.downloader -d weights/{NLTK_DATA} cmudict averaged_perceptron_tagger_eng"


class GptSovitsEngine(WorkerEngine):
    """GPT-SoVITS: the wizard's training steps as its own scripts, and the voices it trained, spoken in
    its worker through its own inference code."""

    info = EngineInfo(
        name="gpt_sovits",
        display_name="GPT-SoVITS",
        capabilities=frozenset({Capability.TRAIN, Capability.TTS}),
        languages=LANGUAGES,
        license="MIT",
        sample_rate=32000,  # v2 SoVITS decodes 32 kHz
        description=(
            "RVC-Boss's few-shot voice cloning (GPT text-to-semantic + SoVITS): the training wizard runs its "
            "own scripts from your clone and models under weights/GPT-SoVITS, and speaks the voices it "
            "trained; Chinese and English; GPU recommended."
        ),
        # Packages are checked in its environment (engines/envs/gpt-sovits.txt), where its code runs.
        requirements=(
            Requirement("package", "torch"),
            Requirement("package", "torchaudio"),
            Requirement("package", "transformers"),
            Requirement("package", "pytorch_lightning"),
            Requirement("package", "g2p_en"),
            Requirement("package", "pypinyin"),
            Requirement("package", "jieba_fast"),
            Requirement("package", "gradio"),  # tools/my_utils.py, which every dataset script imports
            Requirement("package", "ffmpeg"),  # ffmpeg-python
            *(
                Requirement("weights", f"{CODE}/{script}", hint=_CLONE)
                for script in (*STEP_SCRIPTS.values(), S2_CONFIG, S1_CONFIG)
            ),
            Requirement("weights", f"{PACKAGE}/TTS_infer_pack/TTS.py", hint=_CLONE),
            Requirement("weights", BERT, hint=f"{_DOWNLOAD} (the chinese-roberta-wwm-ext-large folder)"),
            Requirement("weights", HUBERT, hint=f"{_DOWNLOAD} (the chinese-hubert-base folder)"),
            Requirement("weights", S2G, hint=f"{_DOWNLOAD} (gsv-v2final-pretrained: the SoVITS generator)"),
            Requirement(
                "weights", S2D, hint=f"{_DOWNLOAD} (gsv-v2final-pretrained: the SoVITS discriminator)"
            ),
            Requirement("weights", S1, hint=f"{_DOWNLOAD} (gsv-v2final-pretrained: the GPT model)"),
            Requirement("weights", G2PW, hint=_G2PW),
            Requirement("weights", NLTK_DATA, hint=_NLTK),
        ),
        memory_mb=6000,
        environment="gpt-sovits",
    )

    worker_idle_exit_s = HEAVY_IDLE_EXIT_S

    def __init__(
        self,
        weights_dir: Path,
        allocator: GpuAllocator,
        voices_dir: Path | None = None,
        *,
        in_process: bool = False,
    ) -> None:
        super().__init__(weights_dir, allocator, in_process=in_process)
        self.voices_dir = voices_dir  # the voices export_voice made (None in the worker: it is given folders)
        self._tts: Any = None  # TTS_infer_pack.TTS, in the worker
        self._weights: tuple[str, str] | None = None  # the GPT and SoVITS weights it holds

    @property
    def code_dir(self) -> Path:
        return self.weights_dir / CODE

    # ---- voices: the ones the wizard exported --------------------------------------------------------
    def voices(self) -> list[VoiceInfo]:
        found = []
        for meta_file in sorted(self.voices_dir.glob("*/voice.json")) if self.voices_dir else []:
            with contextlib.suppress(ValueError, OSError, KeyError):
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
                language = "en-us" if meta["language"] == "en" else meta["language"]
                found.append(
                    VoiceInfo(
                        meta_file.parent.name,
                        meta.get("name", meta_file.parent.name),
                        self.info.name,
                        language,
                        description=f"trained by the wizard (task {meta.get('task', '?')})",
                    )
                )
        return found

    def voice_folder(self, voice: str) -> Path:
        self.check_voice(voice)
        assert self.voices_dir is not None
        return self.voices_dir / voice

    def _synthesize_timed(
        self, sentence: str, voice: str, options: SynthesisOptions
    ) -> tuple[np.ndarray, tuple]:
        if self.in_process:  # in the worker, a voice is its folder (the studio resolved the id)
            return self._model_sentence(sentence, voice, options), ()
        return super()._synthesize_timed(sentence, str(self.voice_folder(voice)), options)

    # ---- the model: in the worker only -------------------------------------------------------------
    def _load_model(self) -> None:
        """Its inference code from the clone, run from the clone's folder: upstream reads its G2PW
        model and BERT tokenizer relative to the working directory (this process is the worker's own)."""
        os.environ.update(self._environment(Path(tempfile.gettempdir()) / "gpt-sovits-bin"))
        for entry in (self.code_dir / "GPT_SoVITS", self.code_dir):
            if str(entry) not in sys.path:
                sys.path.insert(0, str(entry))
        os.chdir(self.code_dir)
        importlib.import_module("TTS_infer_pack.TTS")  # now: a broken install fails the load, not a sentence

    def _unload_model(self) -> None:
        self._tts, self._weights = None, None

    def _pipeline(self, gpt: str, sovits: str) -> Any:
        """Upstream's TTS holding these weights (switched in place when another voice speaks)."""
        from TTS_infer_pack.TTS import TTS, TTS_Config

        if self._tts is None:
            on_gpu = self.device.startswith("cuda")
            config = {
                "device": self.device,
                "is_half": on_gpu,
                "version": VERSION,
                "t2s_weights_path": gpt,
                "vits_weights_path": sovits,
                "bert_base_path": str(self.weights_dir / BERT),
                "cnhuhbert_base_path": str(self.weights_dir / HUBERT),
            }
            self._tts, self._weights = TTS(TTS_Config({"custom": config})), (gpt, sovits)
        elif self._weights != (gpt, sovits):
            self._tts.init_t2s_weights(gpt)
            self._tts.init_vits_weights(sovits)
            self._weights = (gpt, sovits)
        return self._tts

    def _model_sentence(self, sentence: str, voice: str, options: SynthesisOptions) -> np.ndarray:
        folder = Path(voice)
        meta = json.loads((folder / "voice.json").read_text(encoding="utf-8"))
        language = base_language(options.language or meta["language"])
        if language not in LANGUAGES:
            raise ValueError(f"GPT-SoVITS here speaks {' and '.join(LANGUAGES)}; not {options.language}")
        if "en" not in (language, meta["language"]) or language != meta["language"]:
            detector = self.weights_dir / LANGDETECT
            if not detector.is_file():  # its text splitter runs fast-langdetect on anything not English
                raise EngineUnavailable(
                    f"GPT-SoVITS splits {language} text with fast-langdetect's model: place lid.176.bin at "
                    f"{detector} (English voices speaking English need none)"
                )
            os.environ.setdefault("FTLANG_CACHE", str(detector.parent))
        tts = self._pipeline(str(folder / meta["gpt"]), str(folder / meta["sovits"]))
        inputs = {
            "text": sentence,
            "text_lang": language,
            "ref_audio_path": str(folder / meta["reference"]),
            "prompt_text": meta["reference_text"],
            "prompt_lang": meta["language"],
            "top_k": 5,
            "speed_factor": float(options.speed),
            "text_split_method": "cut0",  # the studio already speaks sentence by sentence
            "seed": int(options.extra.get("seed", -1)),  # type: ignore[call-overload]
        }
        pieces, rates = [], {self.info.sample_rate}
        for piece_rate, piece in tts.run(inputs):  # 16-bit samples at its output rate
            pieces.append(np.asarray(piece, dtype=np.float32) / 32768.0)
            rates = {int(piece_rate)}
        rate = rates.pop()
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if rate != self.info.sample_rate and len(audio):
            from math import gcd

            from scipy.signal import resample_poly

            g = gcd(int(rate), self.info.sample_rate)
            audio = resample_poly(audio, self.info.sample_rate // g, int(rate) // g).astype(np.float32)
        return np.clip(audio, -1.0, 1.0)

    # ---- training steps ------------------------------------------------------------------------
    def step_command(
        self, step_name: str, ws: Workspace, params: dict[str, Any], lease: Lease | None = None
    ) -> list[str]:
        """The command (run in `code_dir`) that does `step_name` for the workspace `ws`.

        It starts with `env NAME=value ...`: the variables GPT-SoVITS's scripts read (`webui.py`
        sets the same ones). Inputs the step needs (the `.list` file, a trainer's config) are written
        first, under `ws.work / "gpt_sovits"`. `lease`: the GPUs to use (absolute indices, which the
        scripts themselves put in CUDA_VISIBLE_DEVICES); none runs on the CPU. `params`: `language`
        (en), `batch_size`, `sovits_epochs` (8), `gpt_epochs` (15), `save_every_epoch` (4 / 5),
        `segment_size` (SoVITS's training window in samples, 20480).
        """
        if step_name not in STEP_SCRIPTS:
            raise ValueError(
                f"GPT-SoVITS has no script for the step '{step_name}'; its steps: {', '.join(STEP_SCRIPTS)}"
            )
        python = self._worker_python() or sys.executable
        gpus = [str(index) for index in (lease.gpus if lease else ())]
        paths = _Paths(ws)
        paths.exp.mkdir(parents=True, exist_ok=True)
        env = {
            "PYTHONPATH": f"{self.code_dir}:{self.code_dir / 'GPT_SoVITS'}",  # webui.py adds both (users.pth)
            "version": VERSION,
            "is_half": str(bool(gpus)),  # fp16 on a GPU, as webui.py's default
            "_CUDA_VISIBLE_DEVICES": ",".join(gpus),
            "exp_name": paths.name,
            "opt_dir": str(paths.exp),
            "inp_text": str(_write_list(ws, paths, _language(params))),
            "inp_wav_dir": str(ws.dataset / "wavs"),
            "i_part": "0",
            "all_parts": "1",
            **self._environment(ws.work / "_bin"),
        }
        args: list[str] = []
        if step_name == "extract_text_features":
            env["bert_pretrained_dir"] = str(self.weights_dir / BERT)
        elif step_name == "extract_audio_features":
            env["cnhubert_base_dir"] = str(self.weights_dir / HUBERT)
        elif step_name == "extract_semantic_features":
            env["pretrained_s2G"] = str(self.weights_dir / S2G)
            env["s2config_path"] = S2_CONFIG
        elif step_name == "train_sovits":
            args = ["--config", str(self._s2_config(paths, params, gpus))]
        else:
            env["hz"] = "25hz"
            args = ["--config_file", str(self._s1_config(paths, params, gpus))]
        env_args = [f"{key}={value}" for key, value in env.items()]
        return [shutil.which("env") or "/usr/bin/env", *env_args, python, STEP_SCRIPTS[step_name], *args]

    def _environment(self, bin_dir: Path) -> dict[str, str]:
        """What its code needs beyond PYTHONPATH: NLTK's data for g2p_en, and `ffmpeg` on PATH (its
        audio loader calls it by name)."""
        return {"NLTK_DATA": str(self.weights_dir / NLTK_DATA)} | ffmpeg_on_path(bin_dir)

    def export_voice(
        self, ws: Workspace, voice_id: str, params: dict[str, Any], task_id: str
    ) -> dict[str, Any]:
        """The newest trained GPT and SoVITS weights and a 3-10 s reference clip from the dataset, as
        the voice `voice_id` (replacing one of the same name this task made)."""
        if self.voices_dir is None:
            raise EngineUnavailable("GPT-SoVITS has no voices folder here")
        paths = _Paths(ws)
        weights = {}
        for kind, folder, pattern, step in (
            ("gpt", paths.gpt_weights, "*.ckpt", "train_gpt"),
            ("sovits", paths.sovits_weights, "*.pth", "train_sovits"),
        ):
            found = (
                sorted(folder.glob(pattern), key=lambda path: path.stat().st_mtime) if folder.is_dir() else []
            )
            if not found:
                raise FileNotFoundError(f"no trained {kind.upper()} weights in {folder}: run {step} first")
            weights[kind] = found[-1]
        target = self.voices_dir / voice_id
        if (target / "voice.json").is_file():
            owner = json.loads((target / "voice.json").read_text(encoding="utf-8")).get("task")
            if owner != task_id:
                raise FileExistsError(
                    f"a GPT-SoVITS voice '{voice_id}' exists already (trained by task {owner}): delete it, "
                    "or train with another voice_name"
                )
        staging = self.voices_dir / f".{voice_id}.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        reference_text, seconds = _reference_clip(ws, staging / "reference.wav")
        for source in weights.values():
            shutil.copy2(source, staging / source.name)
        meta = {
            "name": voice_id,
            "language": _language(params),
            "gpt": weights["gpt"].name,
            "sovits": weights["sovits"].name,
            "reference": "reference.wav",
            "reference_text": reference_text,
            "task": task_id,
            "created_at": time.time(),
        }
        (staging / "voice.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
        return {"voice_id": voice_id, "engine": self.info.name, "reference_seconds": seconds} | {
            kind: path.name for kind, path in weights.items()
        }

    def finish_step(self, step_name: str, ws: Workspace) -> dict[str, Any]:
        """Merge a dataset script's part file into the file the trainers read, as `webui.py` does (and
        check that a script, which only logs a clip it cannot read, made something)."""
        paths = _Paths(ws)
        if step_name == "extract_audio_features":  # it writes one feature file per clip, no list
            clips = len(_read_lines(paths.exp / f"{paths.name}.list"))
            made = len(list((paths.exp / "4-cnhubert").glob("*.pt")))
            if made == 0:
                raise ValueError(f"GPT-SoVITS's {STEP_SCRIPTS[step_name]} processed no clip: see its log")
            return {"clips": made} | ({"failed": clips - made} if made < clips else {})
        if step_name == "extract_text_features":
            part, whole, header = paths.exp / "2-name2text-0.txt", paths.exp / "2-name2text.txt", []
        elif step_name == "extract_semantic_features":
            part, whole = paths.exp / "6-name2semantic-0.tsv", paths.exp / "6-name2semantic.tsv"
            header = ["item_name\tsemantic_audio"]
        else:
            return {}
        if not part.is_file():
            raise FileNotFoundError(
                f"GPT-SoVITS's {STEP_SCRIPTS[step_name]} wrote no {part.name}: see its log"
            )
        lines = _read_lines(part)
        if not lines:
            raise ValueError(f"GPT-SoVITS's {STEP_SCRIPTS[step_name]} processed no clip: see its log")
        whole.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
        part.unlink()
        return {"clips": len(lines), "file": str(whole)}

    def _s2_config(self, paths: _Paths, params: dict[str, Any], gpus: list[str]) -> Path:
        """SoVITS's config: configs/s2.json with what webui.py's open1Ba sets."""
        data = json.loads((self.code_dir / S2_CONFIG).read_text(encoding="utf-8"))
        train = data["train"]
        train["batch_size"] = int(params.get("batch_size", 8))
        train["epochs"] = int(params.get("sovits_epochs", 8))
        train["text_low_lr_rate"] = float(params.get("text_low_lr_rate", 0.4))
        train["pretrained_s2G"] = str(self.weights_dir / S2G)
        train["pretrained_s2D"] = str(self.weights_dir / S2D)
        train["if_save_latest"] = True
        train["if_save_every_weights"] = True
        # It saves weights only every save_every_epoch epochs: never more than the run has.
        train["save_every_epoch"] = min(int(params.get("save_every_epoch", 4)), train["epochs"])
        train["gpu_numbers"] = "-".join(gpus) or "0"
        train["fp16_run"] = bool(gpus) and train.get("fp16_run", True)
        if "segment_size" in params:
            train["segment_size"] = int(params["segment_size"])
        data["model"]["version"] = VERSION
        data["data"]["exp_dir"] = data["s2_ckpt_dir"] = str(paths.exp)
        data["save_weight_dir"] = str(paths.sovits_weights)
        data["name"] = paths.name
        data["version"] = VERSION
        paths.sovits_weights.mkdir(parents=True, exist_ok=True)
        (paths.exp / f"logs_s2_{VERSION}").mkdir(parents=True, exist_ok=True)
        config = paths.exp / "s2.json"
        config.write_text(json.dumps(data, indent=2), encoding="utf-8")
        return config

    def _s1_config(self, paths: _Paths, params: dict[str, Any], gpus: list[str]) -> Path:
        """GPT's config: configs/s1longer-v2.yaml with what webui.py's open1Bb sets."""
        import yaml

        data = yaml.safe_load((self.code_dir / S1_CONFIG).read_text(encoding="utf-8"))
        train = data["train"]
        train["batch_size"] = int(params.get("batch_size", 8))
        train["epochs"] = int(params.get("gpt_epochs", 15))
        train["save_every_n_epoch"] = min(int(params.get("save_every_epoch", 5)), train["epochs"])
        train["if_save_every_weights"] = True
        train["if_save_latest"] = True
        train["if_dpo"] = bool(params.get("if_dpo", False))
        if not gpus:
            train["precision"] = "32"  # as webui.py writes without half precision (no fp16 on the CPU)
        train["half_weights_save_dir"] = str(paths.gpt_weights)
        train["exp_name"] = paths.name
        data["pretrained_s1"] = str(self.weights_dir / S1)
        data["train_semantic_path"] = str(paths.exp / "6-name2semantic.tsv")
        data["train_phoneme_path"] = str(paths.exp / "2-name2text.txt")
        data["output_dir"] = str(paths.exp / f"logs_s1_{VERSION}")
        paths.gpt_weights.mkdir(parents=True, exist_ok=True)
        config = paths.exp / "s1.yaml"
        config.write_text(yaml.safe_dump(data, default_flow_style=False), encoding="utf-8")
        return config


class _Paths:
    """Where one workspace's GPT-SoVITS files go."""

    def __init__(self, ws: Workspace) -> None:
        self.name = ws.root.name  # GPT-SoVITS's experiment name: the task folder's
        self.exp = ws.work / "gpt_sovits"
        self.sovits_weights = ws.root / "train" / "SoVITS_weights"
        self.gpt_weights = ws.root / "train" / "GPT_weights"


def _language(params: dict[str, Any]) -> str:
    language = params.get("language", "en")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)} for GPT-SoVITS; got {language!r}")
    return language


def _write_list(ws: Workspace, paths: _Paths, language: str) -> Path:
    """The dataset as GPT-SoVITS's annotation list: `<wav path>|<speaker>|<language>|<text>` a line."""
    csv = ws.dataset / "metadata.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"there is no dataset yet ({csv} is missing): run the dataset steps first")
    rows = []
    for line in csv.read_text(encoding="utf-8").splitlines():
        wav, text = _clip_row(ws, line)
        if wav is not None:
            rows.append(f"{wav}|{paths.name}|{language}|{text}")
    if not rows:
        raise ValueError(f"{csv} lists no clips: run the dataset steps first")
    target = paths.exp / f"{paths.name}.list"
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return target


def _reference_clip(ws: Workspace, target: Path) -> tuple[str, float]:
    """The dataset's longest clip of 3-10 s (or shorter clips joined in order until 3 s) written to
    `target`; returns its transcript and length. TTS_infer_pack takes only 3-10 s references."""
    import soundfile as sf

    rows = []
    for line in (ws.dataset / "metadata.csv").read_text(encoding="utf-8").splitlines():
        wav, text = _clip_row(ws, line)
        if wav is not None and wav.is_file():
            rows.append((wav, text, sf.info(str(wav)).duration))
    low, high = REFERENCE_SECONDS
    fitting = [row for row in rows if low <= row[2] <= high]
    chosen = [max(fitting, key=lambda row: row[2])] if fitting else []
    if not chosen:
        for row in rows:
            if sum(r[2] for r in chosen) + row[2] > high:
                break
            chosen.append(row)
            if sum(r[2] for r in chosen) >= low:
                break
    seconds = sum(row[2] for row in chosen)
    if not low <= seconds <= high:
        raise ValueError(
            f"GPT-SoVITS needs a 3-10 s reference clip and the dataset's clips give none ({len(rows)} clips)"
        )
    audio = [sf.read(str(row[0]), dtype="float32", always_2d=True) for row in chosen]
    rate = audio[0][1]
    if any(r != rate for _, r in audio):
        raise ValueError("the dataset's clips have different sample rates: run the dataset steps again")
    sf.write(target, np.concatenate([a.mean(axis=1) for a, _ in audio]), rate, subtype="PCM_16")
    return " ".join(row[1] for row in chosen), round(seconds, 2)


def _clip_row(ws: Workspace, line: str) -> tuple[Path | None, str]:
    """A metadata.csv line (`clip|text` or `clip.wav|text`) as (its wav, its text); None for no clip."""
    clip_id, _, text = line.partition("|")
    clip_id, text = clip_id.strip(), text.strip()
    if not clip_id or not text:
        return None, ""
    return ws.dataset / "wavs" / (clip_id if clip_id.endswith(".wav") else f"{clip_id}.wav"), text


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line] if path.is_file() else []
