"""Learning-rate schedules of Table 4: linear warm-up, then cosine or DeepSeek-LLM's multi-step.

Both are closed-form functions of the step (`last_epoch`), so the state that torch saves in a
checkpoint (`last_epoch`, `base_lrs`) is all a resumed run needs to continue exactly. They are
built from `_partial_` Hydra configs (`conf/scheduler/*.yaml`) and stepped once per optimizer
step (Lightning `interval: step`).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosineLR", "WarmupMultiStepLR", "warmup_factor"]
log = logging.getLogger(__name__)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up from 1/warmup to 1 over `warmup_steps` (step 0 already trains)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


class _WarmupLR(LRScheduler):
    """Base: lr = base_lr * factor(step); subclasses give the post-warm-up factor."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, last_epoch: int = -1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps <= 0:
            raise ValueError(f"scheduler.total_steps must be > 0, got {total_steps}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        super().__init__(optimizer, last_epoch)

    _CONFIG_KEYS: tuple[str, ...] = ("warmup_steps", "total_steps", "min_lr_ratio", "milestone_steps", "factors")

    def decay_factor(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Position (`last_epoch`, `base_lrs`) plus the shape under `config`, which a resumed run
        does not restore: the schedule of the run's config wins (e.g. a longer `max_steps`)."""
        state = super().state_dict()
        state["config"] = {k: state.pop(k) for k in self._CONFIG_KEYS if k in state}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("config", {})
        now = {k: getattr(self, k) for k in saved if hasattr(self, k)}
        if saved and saved != now:
            log.warning("lr schedule changed on resume: checkpoint %s, now %s (the config wins)", saved, now)
        super().load_state_dict(state)

    def factor(self, step: int) -> float:
        """Multiplier of the peak lr at `step` (0-based optimizer step)."""
        if step < self.warmup_steps:
            return warmup_factor(step, self.warmup_steps)
        return self.decay_factor(step)

    def get_lr(self) -> list[float]:
        f = self.factor(max(self.last_epoch, 0))
        return [base * f for base in self.base_lrs]

    _get_closed_form_lr = get_lr


class WarmupCosineLR(_WarmupLR):
    """Linear warm-up, then cosine from the peak to `min_lr_ratio` * peak at `total_steps`."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, warmup_steps, total_steps, last_epoch)

    def decay_factor(self, step: int) -> float:
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


class WarmupMultiStepLR(_WarmupLR):
    """DeepSeek-LLM's multi-step schedule: linear warm-up, the peak, then fixed drops.

    Defaults: 31.6% of the peak from 80% of `total_steps`, 10% from 90% (DeepSeek-VL paper, Table 4
    "step"). `milestones` are fractions of `total_steps` (or absolute steps when > 1) and
    `factors` the lr multiplier from each milestone on.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        milestones: Sequence[float] = (0.8, 0.9),
        factors: Sequence[float] = (0.316, 0.1),
        last_epoch: int = -1,
    ) -> None:
        if len(milestones) != len(factors):
            raise ValueError(
                f"scheduler.milestones and scheduler.factors need the same length, got {len(milestones)} and {len(factors)}"
            )
        steps = [int(round(m * total_steps)) if m <= 1 else int(m) for m in milestones]
        if steps != sorted(steps):
            raise ValueError(f"scheduler.milestones must increase, got {list(milestones)}")
        self.milestone_steps = steps
        self.factors = [float(f) for f in factors]
        super().__init__(optimizer, warmup_steps, total_steps, last_epoch)

    def decay_factor(self, step: int) -> float:
        factor = 1.0
        for milestone, value in zip(self.milestone_steps, self.factors):
            if step >= milestone:
                factor = value
        return factor
