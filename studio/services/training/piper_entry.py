"""The Piper trainer's own process: piper.train's CLI and ONNX export, made to run in this environment.

`piper_backend.py` runs it as a subprocess; the server never imports it:

    python -m studio.services.training.piper_entry fit --config <fit.yaml>
    python -m studio.services.training.piper_entry export --checkpoint <.ckpt> --output-file <.onnx>

`fit` is piper-tts's own `python -m piper.train fit` (its LightningCLI, VitsModel, VitsDataModule)
with what piper-tts 1.8.0 lacks or gets wrong here put right before its code runs:
- the monotonic alignment core its wheel does not ship (`piper_mas.py`), registered under the name
  piper imports it by;
- its data module builds the voice config only in `prepare_data`, which Lightning runs on rank 0
  alone, so every other DDP rank failed its `setup` (`assert self.piper_config is not None`): a rank
  without the config now prepares it (the cache rank 0 wrote is reused, nothing is redone);
- piper's default callbacks (best-5 checkpoints by val_mel and by val_mos, in the logger's folder)
  give way to the studio's, named in the fit config: `StudioCheckpoint` and `StudioProgress`.
Lightning relaunches `python -m studio.services.training.piper_entry ...` for each DDP rank, so
every rank gets the same setup.

`export` is piper's `piper.train.export_onnx` with `dynamo=False`: torch >= 2.9 defaults
`torch.onnx.export` to the dynamo exporter, which needs onnxscript (not installed); Piper's export
(opset 15, dynamic_axes) is written for the TorchScript exporter.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from studio.services.training import piper_mas
from studio.services.training.piper_backend import EVENT_PREFIX


def emit(event: str, **fields: Any) -> None:
    """One line for the studio to parse: the prefix, then a JSON object."""
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def _metrics(trainer: L.Trainer, prefixes: tuple[str, ...]) -> dict[str, float]:
    return {
        name: round(float(value), 5)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(prefixes)
    }


class StudioProgress(L.Callback):
    """Reports the start step, every training step's losses and each validation, on global rank 0."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            emit(
                "start",
                step=trainer.global_step,
                max_steps=trainer.max_steps,
                epoch=trainer.current_epoch,
                resumed_from=str(trainer.ckpt_path) if trainer.ckpt_path else None,
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.is_global_zero:
            metrics = _metrics(trainer, ("loss_", "train_"))
            emit("step", step=trainer.global_step, epoch=trainer.current_epoch, **metrics)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            emit("validation", step=trainer.global_step, **_metrics(trainer, ("val_",)))


class StudioCheckpoint(ModelCheckpoint):
    """Every `every_n_train_steps` steps: `last.ckpt` (what a resume starts from) and the `keep` newest
    `step=N.ckpt`; once more when training ends, so the final steps are never lost."""

    def __init__(self, dirpath: str, every_n_train_steps: int, keep: int = 0) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="step={step}",
            monitor="step",
            mode="max",
            save_top_k=keep,
            every_n_train_steps=every_n_train_steps,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # a resume overwrites last.ckpt instead of writing last-v1.ckpt
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            emit("checkpoint", step=trainer.global_step, path=filepath)


def _prepare_on_every_rank() -> None:
    """Let every DDP rank build the voice config piper's data module makes only in prepare_data."""
    from piper.train.vits.dataset import VitsDataModule

    setup = VitsDataModule.setup

    def setup_with_config(self: VitsDataModule, stage: str) -> None:
        if self.piper_config is None:  # a rank Lightning did not run prepare_data on
            self.prepare_data()
        setup(self, stage)

    VitsDataModule.setup = setup_with_config  # type: ignore[method-assign]


def fit() -> None:
    """piper.train's main(), reading `fit ...` from sys.argv as Lightning's DDP relaunch repeats it."""
    piper_mas.install()
    _prepare_on_every_rank()
    from piper.train import __main__ as piper_main

    piper_main._DEFAULT_CALLBACKS[:] = []  # the studio's callbacks come from the fit config
    piper_main.main()


def export(argv: list[str]) -> None:
    import torch

    torch.onnx.export = functools.partial(torch.onnx.export, dynamo=False)  # type: ignore[assignment]
    from piper.train import export_onnx

    sys.argv = ["piper.train.export_onnx", *argv]
    export_onnx.main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["export"]:
        export(sys.argv[2:])
    else:
        fit()
