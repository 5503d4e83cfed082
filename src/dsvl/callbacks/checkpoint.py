"""`RunCheckpoint`: the run's only writer of checkpoints, `last.ckpt` included."""
from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that also writes `last.ckpt` whenever training ends at a step it has not
    saved yet (`max_steps` reached, or a preemption stop), so resuming never needs a second writer.
    Lightning's own `on_train_end` saves only when no `last.ckpt` was written during the whole fit."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
