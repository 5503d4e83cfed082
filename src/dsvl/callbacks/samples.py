"""Sample image / prediction tables in W&B after each validation (only when a W&B logger is attached),
from the stage's `sample_predictions(limit) -> [{"prompt", "prediction", "target", "image"?}]`."""
from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


class SampleLogger(Callback):
    """Logs `val/samples` as a `wandb.Table` of up to `num_samples` predictions per validation."""

    def __init__(self, num_samples: int = 4, max_new_tokens: int = 24) -> None:
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or trainer.sanity_checking or not trainer.is_global_zero:
            return
        try:
            rows = pl_module.sample_predictions(self.num_samples, max_new_tokens=self.max_new_tokens)
        except Exception as err:  # a sample table must never kill a run
            log.warning("sample predictions failed: %s", err)
            return
        if not rows:
            return
        import wandb

        data = [[trainer.global_step, wandb.Image(r["image"]) if r.get("image") is not None else None,
                 r.get("prompt", ""), r.get("prediction", ""), r.get("target", "")] for r in rows]
        for lg in loggers:
            lg.log_table("val/samples", ["step", "image", "prompt", "prediction", "target"], data, step=trainer.global_step)
