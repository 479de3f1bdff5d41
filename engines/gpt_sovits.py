"""GPT-SoVITS (RVC-Boss, MIT): what the user's install lacks, and its scripts as the wizard's steps.

GPT-SoVITS is not installable from a registry and its requirements clash with the studio's (its own
torch, transformers, and text front ends), so the studio never imports it: it runs the user's clone
with the user's own Python environment, script by script, as the training wizard's steps, exactly as
GPT-SoVITS's `webui.py` does (environment variables for the dataset scripts, a JSON / YAML config
for the two trainers). This adapter reports what is missing (`status()`) and builds those commands
(`step_command()`); the lead's training service runs them with `piper_backend.run_logged`.

Layout it expects (the v2 release layout; nothing is ever downloaded by the studio):

    weights/GPT-SoVITS/
    ├── code/                   git clone https://github.com/RVC-Boss/GPT-SoVITS
    │   └── GPT_SoVITS/
    │       ├── prepare_datasets/1-get-text.py, 2-get-hubert-wav32k.py, 3-get-semantic.py
    │       ├── s2_train.py (SoVITS), s1_train.py (GPT), configs/s2.json, configs/s1longer-v2.yaml
    │       └── pretrained_models/        from huggingface.co/lj1995/GPT-SoVITS
    │           ├── chinese-roberta-wwm-ext-large/    BERT (text features)
    │           ├── chinese-hubert-base/              HuBERT (audio features)
    │           └── gsv-v2final-pretrained/           s2G2333k.pth, s2D2333k.pth (SoVITS G and D),
    │                                                 s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt (GPT)
    └── venv/bin/python         its own environment: python -m venv weights/GPT-SoVITS/venv, then
                                venv/bin/pip install -r code/requirements.txt (a symlink to a conda
                                env's python works too)

The dataset steps read the studio's dataset (`dataset/metadata.csv` + `dataset/wavs/`) through a
GPT-SoVITS `.list` file this module writes (`<wav>|<speaker>|<language>|<text>`); features and the
trainers' own checkpoints (they resume from them) go to `_work/gpt_sovits/`, the trained weights the
user keeps to `train/SoVITS_weights/` and `train/GPT_weights/`. Each dataset script writes part files
(`2-name2text-0.txt`, `6-name2semantic-0.tsv`) that its web UI merges; `finish_step()` does that.

Speaking with GPT-SoVITS inside the studio is not implemented: it has no voices here and loading it
raises EngineUnavailable saying so. Use its own inference (GPT_SoVITS/inference_webui.py) with the
trained weights. Nothing of GPT-SoVITS itself runs in the tests (its code, models and environment
are not reachable here): they check what status() names and the commands and configs built.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.base import Capability, Engine, EngineInfo, EngineUnavailable, Requirement, UnknownVoice
from engines.gpu import GpuAllocator, Lease

if TYPE_CHECKING:
    from studio.services.training.common import Workspace

FOLDER = "GPT-SoVITS"
CODE = f"{FOLDER}/code"
PYTHON = f"{FOLDER}/venv/bin/python"
PACKAGE = f"{CODE}/GPT_SoVITS"
PRETRAINED = f"{PACKAGE}/pretrained_models"
BERT = f"{PRETRAINED}/chinese-roberta-wwm-ext-large"
HUBERT = f"{PRETRAINED}/chinese-hubert-base"
V2_PRETRAINED = f"{PRETRAINED}/gsv-v2final-pretrained"
S2G = f"{V2_PRETRAINED}/s2G2333k.pth"
S2D = f"{V2_PRETRAINED}/s2D2333k.pth"
S1 = f"{V2_PRETRAINED}/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
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
LANGUAGES = ("zh", "en", "ja", "ko", "yue")
CODE_REPO = "https://github.com/RVC-Boss/GPT-SoVITS"
MODEL_REPO = "lj1995/GPT-SoVITS"

_CLONE = f"git clone {CODE_REPO} weights/{CODE}"
_DOWNLOAD = f"huggingface-cli download {MODEL_REPO} --local-dir weights/{PRETRAINED}"
_VENV = f"python -m venv weights/{FOLDER}/venv && weights/{PYTHON.replace('/python', '/pip')} install -r weights/{CODE}/requirements.txt"


class GptSovitsEngine(Engine):
    """GPT-SoVITS status and training commands; the user's clone runs in its own environment."""

    info = EngineInfo(
        name="gpt_sovits",
        display_name="GPT-SoVITS (your install)",
        capabilities=frozenset({Capability.TRAIN}),
        languages=LANGUAGES,
        license="MIT",
        sample_rate=32000,  # v2 SoVITS decodes 32 kHz
        description=(
            "RVC-Boss's few-shot voice cloning (GPT text-to-semantic + SoVITS), trained by the wizard with "
            "its own scripts from your clone, models and Python environment under weights/GPT-SoVITS; "
            "needs a GPU. Speaking with it inside the studio is not implemented."
        ),
        requirements=(
            Requirement("gpu", "", "GPT-SoVITS trains on a CUDA GPU"),
            *(
                Requirement("weights", f"{CODE}/{script}", hint=_CLONE)
                for script in (*STEP_SCRIPTS.values(), S2_CONFIG, S1_CONFIG)
            ),
            Requirement("weights", BERT, hint=f"{_DOWNLOAD} (the chinese-roberta-wwm-ext-large folder)"),
            Requirement("weights", HUBERT, hint=f"{_DOWNLOAD} (the chinese-hubert-base folder)"),
            Requirement("weights", S2G, hint=f"{_DOWNLOAD} (gsv-v2final-pretrained: the SoVITS generator)"),
            Requirement(
                "weights", S2D, hint=f"{_DOWNLOAD} (gsv-v2final-pretrained: the SoVITS discriminator)"
            ),
            Requirement("weights", S1, hint=f"{_DOWNLOAD} (gsv-v2final-pretrained: the GPT model)"),
            Requirement("weights", PYTHON, hint=f"its own Python environment: {_VENV}"),
        ),
        memory_mb=6000,
    )

    def __init__(self, weights_dir: Path, allocator: GpuAllocator) -> None:
        super().__init__(weights_dir, allocator)

    @property
    def code_dir(self) -> Path:
        return self.weights_dir / CODE

    @property
    def python(self) -> Path:
        return self.weights_dir / PYTHON

    # ---- speech: not in the studio ---------------------------------------------------------------
    def check_voice(self, voice: str) -> None:
        raise UnknownVoice(
            "GPT-SoVITS has no voices in the studio: speaking with it here is not implemented; use its own "
            f"inference (GPT_SoVITS/inference_webui.py in {self.code_dir}) with the weights the wizard trained"
        )

    def _load(self) -> None:
        raise EngineUnavailable(
            "gpt_sovits: speaking with GPT-SoVITS inside the studio is not implemented (the wizard trains "
            "with it); use its own inference web UI with the trained weights"
        )

    def _unload(self) -> None:
        """Nothing is ever loaded in this process."""

    # ---- training steps ------------------------------------------------------------------------
    def step_command(
        self, step_name: str, ws: Workspace, params: dict[str, Any], lease: Lease | None = None
    ) -> list[str]:
        """The command (run in `code_dir`) that does `step_name` for the workspace `ws`.

        It starts with `env NAME=value ...`: the variables GPT-SoVITS's scripts read (`webui.py`
        sets the same ones). Inputs the step needs (the `.list` file, a trainer's config) are written
        first, under `ws.work / "gpt_sovits"`. `lease`: the GPUs to use (absolute indices, which the
        scripts themselves put in CUDA_VISIBLE_DEVICES); none runs on the CPU. `params`: `language`
        (en), `batch_size`, `sovits_epochs` (8), `gpt_epochs` (15), `save_every_epoch` (4 / 5).
        """
        if step_name not in STEP_SCRIPTS:
            raise ValueError(
                f"GPT-SoVITS has no script for the step '{step_name}'; its steps: {', '.join(STEP_SCRIPTS)}"
            )
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
            args = ["--config_file", str(self._s1_config(paths, params))]
        env_args = [f"{key}={value}" for key, value in env.items()]
        return [
            shutil.which("env") or "/usr/bin/env",
            *env_args,
            str(self.python),
            STEP_SCRIPTS[step_name],
            *args,
        ]

    def finish_step(self, step_name: str, ws: Workspace) -> dict[str, Any]:
        """Merge a dataset script's part file into the file the trainers read, as `webui.py` does."""
        paths = _Paths(ws)
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
        lines = [line for line in part.read_text(encoding="utf-8").strip("\n").split("\n") if line]
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
        train["save_every_epoch"] = int(params.get("save_every_epoch", 4))
        train["gpu_numbers"] = "-".join(gpus) or "0"
        train["fp16_run"] = bool(gpus) and train.get("fp16_run", True)
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

    def _s1_config(self, paths: _Paths, params: dict[str, Any]) -> Path:
        """GPT's config: configs/s1longer-v2.yaml with what webui.py's open1Bb sets."""
        import yaml

        data = yaml.safe_load((self.code_dir / S1_CONFIG).read_text(encoding="utf-8"))
        train = data["train"]
        train["batch_size"] = int(params.get("batch_size", 8))
        train["epochs"] = int(params.get("gpt_epochs", 15))
        train["save_every_n_epoch"] = int(params.get("save_every_epoch", 5))
        train["if_save_every_weights"] = True
        train["if_save_latest"] = True
        train["if_dpo"] = bool(params.get("if_dpo", False))
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
        clip_id, _, text = line.partition("|")
        if clip_id.strip() and text.strip():
            rows.append(f"{ws.dataset / 'wavs' / (clip_id + '.wav')}|{paths.name}|{language}|{text.strip()}")
    if not rows:
        raise ValueError(f"{csv} lists no clips: run the dataset steps first")
    target = paths.exp / f"{paths.name}.list"
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return target
