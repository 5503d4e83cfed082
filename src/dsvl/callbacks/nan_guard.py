"""Skip optimizer steps whose loss or gradients are not finite; stop after too many in a row
(docs/reliability.md, "Non-finite loss or gradients").

One NaN batch in a multi-day run should cost one step, not the run: every gradient is set to None,
so AdamW moves neither the weights nor its moments, and every checkpoint on disk stays good. All
ranks decide together (any rank non-finite -> all skip), so replicas never diverge.
"""
from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer

from dsvl.errors import ConfigError

log = logging.getLogger(__name__)


class NonFiniteLossError(ConfigError):
    """Training produced non-finite losses or gradients for too many consecutive steps."""


def grads_finite(params: Any) -> bool:
    """True when every existing gradient is finite (one device sync for all of them)."""
    flags = [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    return bool(torch.stack(flags).all()) if flags else True


class NonFiniteGuard(Callback):
    """Drops the update of a step with a NaN/Inf loss or gradient; raises after `max_consecutive` in a row."""

    def __init__(self, max_consecutive: int = 5) -> None:
        if int(max_consecutive) < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = int(max_consecutive)
        self.skipped = 0  # total, across resumes (kept in the checkpoint)
        self.consecutive = 0
        self._loss_bad = False  # any micro-batch of the current global step had a non-finite loss

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            self._loss_bad = True

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        # a GradScaler skips overflow steps itself; DeepSpeed keeps gradients in its engine: count and stop only
        owns_grads = getattr(trainer.precision_plugin, "scaler", None) is None and "DeepSpeed" not in type(trainer.strategy).__name__
        bad = self._loss_bad or (owns_grads and not grads_finite(params))
        self._loss_bad = False
        if trainer.world_size > 1:
            bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))
        if not bad:
            self.consecutive = 0
            return
        if owns_grads:
            for p in params:  # no gradient -> torch optimizers skip the parameter entirely
                p.grad = None
        self.skipped += 1
        self.consecutive += 1
        step = trainer.global_step
        log.warning("step %d: non-finite loss or gradients, update skipped (%d in a row, %d in total)",
                    step, self.consecutive, self.skipped)
        if self.consecutive >= self.max_consecutive:
            first = step - self.consecutive + 1  # a skipped update still counts as a global step
            ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(trainer.checkpoint_callback, "dirpath", "")
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive steps with non-finite loss or gradients (steps {first}-{step}), "
                f"stopping; no bad update was applied, the last checkpoint is intact{f' ({ckpt})' if ckpt else ''}. "
                "Lower optim.lr, check the data, or raise callbacks.nonfinite_guard.max_consecutive"
            )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % max(int(trainer.accumulate_grad_batches), 1):
            return
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))

