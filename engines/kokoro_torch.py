"""Kokoro-82M, full-precision torch model from user-downloaded weights: the heavy Kokoro engine.

Runs hexgrad's `kokoro` package (`KModel`) on the leased device, from `weights/Kokoro-82M/`
(`kokoro-v1_0.pth`, `config.json`, `voices/*.pt`, as in the hexgrad/Kokoro-82M repository).
Nothing is ever fetched from the hub: both paths are handed to `KModel`. Text becomes phonemes
through misaki's espeak-ng G2P, because misaki's English G2P downloads a spaCy model at run time.

The model runs in a worker process (`engines/worker.py`): in the studio this class answers
`status()` and `voices()` itself and sends each sentence to its worker; the worker builds the same
class with `in_process=True`, and only there do `_load_model` and `_model_sentence` run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.base import Capability, EngineInfo, Requirement, SynthesisOptions, VoiceInfo
from engines.gpu import GpuAllocator
from engines.worker import WorkerEngine

if TYPE_CHECKING:
    import torch
    from kokoro import KModel
    from misaki.espeak import EspeakG2P

REPO_ID = "hexgrad/Kokoro-82M"
FOLDER = "Kokoro-82M"
_DOWNLOAD = f"download it with config.json and voices/ from the {REPO_ID} repository on Hugging Face, https://huggingface.co/{REPO_ID}"
_SAME_REPO = f"from the {REPO_ID} repository on Hugging Face"
_ACCENTS = {"a": "en-us", "b": "en-gb"}  # Kokoro voice ids start with a language letter, then f/m
_GENDERS = {"f": "female", "m": "male"}


def split_phonemes(phonemes: str, limit: int) -> list[str]:
    """`phonemes` cut into pieces of at most `limit` symbols, at word boundaries where there is one."""
    pieces: list[str] = []
    rest = phonemes.strip()
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:  # one word longer than the limit: cut inside it
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


class KokoroTorchEngine(WorkerEngine):
    """Kokoro-82M in torch on GPU (or CPU): 24 kHz US and British English, every voice pack in voices/."""

    info = EngineInfo(
        name="kokoro-torch",
        display_name="Kokoro-82M (torch)",
        capabilities=frozenset({Capability.TTS}),
        languages=("en-us", "en-gb"),
        license="Apache-2.0",
        sample_rate=24000,
        description="hexgrad's Kokoro-82M in full precision, with all its voice packs; uses the GPU when there is one.",
        requirements=(
            Requirement("package", "kokoro", "pip install kokoro"),
            Requirement("package", "misaki", "pip install misaki"),
            Requirement("weights", f"{FOLDER}/kokoro-v1_0.pth", hint=_DOWNLOAD),
            Requirement("weights", f"{FOLDER}/config.json", hint=_SAME_REPO),
            Requirement("weights", f"{FOLDER}/voices", hint=f"the voices/*.pt files {_SAME_REPO}"),
        ),
        memory_mb=800,
    )

    def __init__(self, weights_dir: Path, allocator: GpuAllocator, *, in_process: bool = False) -> None:
        super().__init__(weights_dir, allocator, in_process=in_process)
        self._model: KModel | None = None
        self._packs: dict[str, torch.Tensor] = {}
        self._g2p: dict[str, EspeakG2P] = {}

    @property
    def model_dir(self) -> Path:
        return self.weights_dir / FOLDER

    def _voice_files(self) -> dict[str, Path]:
        folder = self.model_dir / "voices"
        return {path.stem: path for path in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                voice_id,
                voice_id.partition("_")[2].title() or voice_id,
                self.info.name,
                _ACCENTS.get(voice_id[:1], self.info.languages[0]),
                _GENDERS.get(voice_id[1:2], ""),
                f"Kokoro-82M voice pack {voice_id}",
            )
            for voice_id in self._voice_files()
        ]

    # ---- the model: in the worker only -------------------------------------------------------------
    def _load_model(self) -> None:
        from kokoro import KModel

        # Both paths given, so KModel never calls hf_hub_download; repo_id only silences its warning.
        config, weights = self.model_dir / "config.json", self.model_dir / "kokoro-v1_0.pth"
        self._model = KModel(repo_id=REPO_ID, config=str(config), model=str(weights)).to(self.device).eval()

    def _unload_model(self) -> None:
        self._model = None
        self._packs.clear()
        self._g2p.clear()

    def _pack(self, voice: str) -> torch.Tensor:
        """The voice's style pack, [510, 1, 256]: one style row per phoneme count."""
        if voice not in self._packs:
            import torch

            self._packs[voice] = torch.load(self._voice_files()[voice], map_location="cpu", weights_only=True)
        return self._packs[voice]

    def _phonemes(self, text: str, language: str | None) -> str:
        assert self._model is not None
        language = language or self.info.languages[0]
        if language not in self.info.languages:
            raise ValueError(f"engine '{self.info.name}' speaks only {' and '.join(self.info.languages)}")
        if language not in self._g2p:
            from misaki.espeak import EspeakG2P

            self._g2p[language] = EspeakG2P(language=language)
        phonemes, _ = self._g2p[language](text)
        # KModel silently drops symbols outside its vocab; drop them here so the style row matches the tokens.
        return "".join(symbol for symbol in phonemes if symbol in self._model.vocab)

    def _model_sentence(self, sentence: str, voice: str, options: SynthesisOptions) -> np.ndarray:
        assert self._model is not None
        pack = self._pack(voice)
        # The context holds 510 symbols plus two pad tokens, and the pack has one row per length up to 510.
        limit = min(self._model.context_length - 2, len(pack))
        audio = [
            self._model(piece, pack[len(piece) - 1], options.speed).numpy()
            for piece in split_phonemes(self._phonemes(sentence, options.language), limit)
        ]
        return np.concatenate(audio).astype(np.float32) if audio else np.zeros(0, np.float32)
