"""The language share of global steps (DeepSeek-VL paper, modality warm-up) and each step's modality.

`language_ratio(step)` warms from `start` to `target` over `warmup_steps` (linear or cosine),
then stays at `target`. `modality(step)` is decided by error diffusion on the cumulative
schedule: step s is a text step iff round(T(s)) > round(T(s-1)), with T(s) the sum of the ratios
of steps 0..s. So the number of text steps in any window of W steps differs from the scheduled
sum by less than 1 (share within 1/W), and the decision is a pure function of config and step:
identical on every rank without communication, and exact after a resume.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from dsvl.errors import DataError

log = logging.getLogger(__name__)
Modality = Literal["text", "multimodal"]
TEXT, MULTIMODAL = "text", "multimodal"
MODALITIES: tuple[str, str] = (TEXT, MULTIMODAL)


@dataclass
class ModalitySchedule:
    """Scheduled language ratio with a deterministic quota rule for the modality of each global step."""

    start: float = 1.0
    target: float = 0.7
    warmup_steps: int = 0
    shape: str = "linear"

    def __post_init__(self) -> None:
        for name in ("start", "target"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise DataError(f"ModalitySchedule.{name} must be in [0, 1], got {getattr(self, name)}")
        if int(self.warmup_steps) < 0:
            raise DataError(f"ModalitySchedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.shape not in ("linear", "cosine"):
            raise DataError(f"ModalitySchedule.shape must be 'linear' or 'cosine', got {self.shape!r}")
        self.start, self.target, self.warmup_steps = float(self.start), float(self.target), int(self.warmup_steps)

    def language_ratio(self, step: int) -> float:
        """Scheduled share of text steps at global step `step` (0-based)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step >= self.warmup_steps:
            return self.target
        x = step / self.warmup_steps
        f = x if self.shape == "linear" else 0.5 * (1.0 - math.cos(math.pi * x))
        return self.start + (self.target - self.start) * f

    @cached_property
    def _warmup_cumsum(self) -> np.ndarray:
        ratios = np.array([self.language_ratio(s) for s in range(self.warmup_steps)], dtype=np.float64)
        return np.cumsum(ratios)

    def cumulative(self, step: int) -> float:
        """T(step): sum of the scheduled ratios of steps 0..step (0.0 for step -1)."""
        if step < 0:
            return 0.0
        w = self.warmup_steps
        if step < w:
            return float(self._warmup_cumsum[step])
        base = float(self._warmup_cumsum[-1]) if w else 0.0
        return base + (step - w + 1) * self.target

    def text_steps_before(self, step: int) -> int:
        """Number of text steps among steps 0..step-1 (the realised quota)."""
        return int(math.floor(self.cumulative(step - 1) + 0.5))

    def modality(self, step: int) -> Modality:
        """"text" or "multimodal" for global step `step`."""
        return TEXT if self.text_steps_before(step + 1) > self.text_steps_before(step) else MULTIMODAL

    def state_dict(self) -> dict[str, Any]:
        """The config (the schedule is stateless: the step alone decides); stored to detect changes on resume."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Warn when a resumed run's schedule differs from the checkpoint's (the new config wins)."""
        if state and state != self.state_dict():
            log.warning("modality schedule changed on resume: checkpoint %s, now %s", state, self.state_dict())
