"""Test-only Lightning callbacks, loaded by `dsvl-train` subprocesses through `+callbacks.NAME._target_=`
(the test puts this folder on PYTHONPATH): record every micro-batch, kill or signal the process at a
given point, poison the loss of given steps. They only observe or interrupt; they never change what
a healthy run computes.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback


def trainable_checksum(module: torch.nn.Module) -> float:
    """Sum of |w| + w over trainable parameters in float64: changes with any update, equal when none happened."""
    with torch.no_grad():
        return float(sum((p.detach().double().abs() + p.detach().double()).sum() for p in module.parameters() if p.requires_grad))


class StepRecorder(Callback):
    """Appends one JSON line per micro-batch: global step, index in the step, modality, sample keys, loss and
    a checksum of the trainable weights *before* the micro-batch (flushed at once, so a SIGKILL loses nothing).
    `{rank}` in the path is replaced by the global rank."""

    def __init__(self, path: str) -> None:
        self.template = str(path)
        self.path = Path(self.template.format(rank=0))
        self._before: dict[str, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.path = Path(self.template.format(rank=trainer.global_rank))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
        self._before = {"step": int(trainer.global_step), "micro": batch_idx % accumulate,
                        "modality": str(batch.get("modality")), "keys": [str(k) for k in batch.get("keys", [])],
                        "weights": trainable_checksum(pl_module)}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        row = dict(self._before, loss=float(loss.detach()) if loss is not None else None)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


class SignalAt(Callback):
    """Sends `signal` to this process after micro-batch `micro` of global step `step` (mid-step when micro <
    accumulate - 1). SIGKILL there is a crash right after the checkpoint of step `step`."""

    def __init__(self, step: int, micro: int = 0, signal: str = "SIGKILL") -> None:
        self.step, self.micro, self.signal = int(step), int(micro), signal
        self.sent = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
        if not self.sent and trainer.global_step == self.step and batch_idx % accumulate == self.micro:
            self.sent = True
            os.kill(os.getpid(), signal.Signals[self.signal])


class PoisonLoss(Callback):
    """Multiplies the loss of the first micro-batch of each step in `steps` by NaN (loss and gradients NaN),
    or adds a NaN constant for steps in `add_steps` (a NaN loss whose gradients stay finite), on every rank
    or only on `rank`."""

    def __init__(self, steps: list[int], rank: int | None = None, add_steps: list[int] = ()) -> None:
        self.steps = {int(s) for s in steps}
        self.add_steps = {int(s) for s in add_steps}
        self.rank = rank

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        original = pl_module.training_step

        def poisoned(batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> Any:
            loss = original(batch, batch_idx, *args, **kwargs)
            accumulate = max(int(trainer.accumulate_grad_batches), 1)
            if batch_idx % accumulate == 0 and trainer.global_step in self.steps:
                return loss * float("nan")
            if batch_idx % accumulate == 0 and trainer.global_step in self.add_steps:
                return loss + torch.tensor(float("nan"))  # d(constant)/dw = 0: gradients stay finite
            return loss

        pl_module.training_step = poisoned  # type: ignore[method-assign]
