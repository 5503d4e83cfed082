"""`StepLearningRateMonitor`: Lightning's `LearningRateMonitor`, once per optimizer step (Lightning's logs
at every micro-batch's start under gradient accumulation: one identical learning-rate row per micro-batch).
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor


class StepLearningRateMonitor(LearningRateMonitor):
    """Logs the learning rates on the first micro-batch of each global step only."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx % max(int(trainer.accumulate_grad_batches), 1) == 0:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
