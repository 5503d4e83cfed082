"""Modality accounting: the scheduled language ratio against the realised share of text steps.

Both come from the datamodule: `schedule` (`language_ratio(step)`, `modality(step)`) and `accounting`
(`dsvl.data.DataAccounting`, in the data's checkpoint state). A micro-batch whose modality differs
from the schedule's for its global step is counted as `train/modality_mismatch` (it must stay 0).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class ModalityAccounting(Callback):
    """Logs `train/language_ratio` (scheduled), `train/text_share` (realised) and mismatches (in the checkpoint)."""

    def __init__(self) -> None:
        self.mismatches = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        modality = str(batch.get("modality", "text")) if isinstance(batch, dict) else "text"
        dm = trainer.datamodule
        grouped = getattr(dm, "mode", "grouped") == "grouped" and getattr(dm, "schedule", None) is not None
        expected = dm.schedule.modality(trainer.global_step) if grouped else None
        if expected is not None and expected != modality:
            self.mismatches += 1
            if self.mismatches <= 3:
                log.warning("step %d: batch modality %s, schedule says %s", trainer.global_step, modality, expected)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
        if (batch_idx + 1) % accumulate:
            return
        step = trainer.global_step - 1  # the optimizer step that just finished
        dm = trainer.datamodule
        # a schedule the batches follow (modes grouped / mixed)
        if getattr(dm, "schedule", None) is not None and getattr(dm, "mode", "grouped") in ("grouped", "mixed"):
            pl_module.log("train/language_ratio", float(dm.schedule.language_ratio(max(step, 0))), on_step=True, batch_size=1)
        share = dm.accounting.text_share if getattr(dm, "accounting", None) is not None else math.nan
        if not math.isnan(share):
            pl_module.log("train/text_share", share, on_step=True, batch_size=1)
        pl_module.log("train/modality_mismatch", float(self.mismatches), on_step=True, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"mismatches": self.mismatches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.mismatches = int(state_dict.get("mismatches", 0))
