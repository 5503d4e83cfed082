"""A TQDM progress bar that shows the global step, the loss and the step's modality."""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Adds `step` and `mod` (text / mm) to the bar; drops the `v_num` clutter."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = dict(super().get_metrics(trainer, pl_module))
        items.pop("v_num", None)
        items["step"] = trainer.global_step
        modality = getattr(pl_module, "current_modality", None)
        if modality:
            items["mod"] = "mm" if modality == "multimodal" else modality
        return items
