"""Learning-rate schedules of Table 4: linear warm-up, then cosine or DeepSeek-LLM's multi-step.

Both are closed-form functions of the step (`last_epoch`), so the state that torch saves in a
checkpoint (`last_epoch`, `base_lrs`) is all a resumed run needs to continue exactly. Built from
`_partial_` Hydra configs (`conf/scheduler/*.yaml`), stepped once per optimizer step.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

log = logging.getLogger(__name__)


class _WarmupLR(LRScheduler):
    """lr = base_lr x factor: linear warm-up from 1/warmup_steps to 1 (step 0 already trains), then `decay_factor`."""

    _CONFIG_KEYS = ("warmup_steps", "total_steps", "min_lr_ratio", "milestone_steps", "factors")

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, last_epoch: int = -1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps <= 0:
            raise ValueError(f"scheduler.total_steps must be > 0, got {total_steps}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        super().__init__(optimizer, last_epoch)

    def decay_factor(self, step: int) -> float:
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

    def get_lr(self) -> list[float]:
        step = max(self.last_epoch, 0)
        f = (step + 1) / self.warmup_steps if step < self.warmup_steps else self.decay_factor(step)
        return [base * f for base in self.base_lrs]

    _get_closed_form_lr = get_lr


class WarmupCosineLR(_WarmupLR):
    """Linear warm-up, then cosine from the peak to `min_lr_ratio` * peak at `total_steps`."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
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
    """DeepSeek-LLM's multi-step schedule: linear warm-up, the peak, then `factors` of it from each of `milestones`
    (fractions of `total_steps`, or steps when > 1); by default 31.6% from 80%, 10% from 90% (Table 4 "step")."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int,
                 milestones: Sequence[float] = (0.8, 0.9), factors: Sequence[float] = (0.316, 0.1),
                 last_epoch: int = -1) -> None:
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
        return next((f for m, f in reversed(list(zip(self.milestone_steps, self.factors))) if step >= m), 1.0)
