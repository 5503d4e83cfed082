"""Table 4 schedules: linear warm-up, cosine, DeepSeek-LLM multi-step; exact continuation after resume."""
from __future__ import annotations

import math

import pytest
import torch

from dsvl.stages import WarmupCosineLR, WarmupMultiStepLR


def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr, betas=(0.9, 0.95), weight_decay=0.0)


def _lrs(sched: torch.optim.lr_scheduler.LRScheduler, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return out


def test_warmup_is_linear_then_cosine_reaches_min() -> None:
    lrs = _lrs(WarmupCosineLR(_opt(2.0), warmup_steps=4, total_steps=14, min_lr_ratio=0.1), 15)
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[4] == pytest.approx(2.0)  # first decay step is the peak
    assert lrs[9] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # half way: midpoint
    assert lrs[14] == pytest.approx(0.2)  # end (and after): the floor
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_step_schedule_drops_to_31_6_and_10_percent_at_80_and_90_percent() -> None:
    sched = WarmupMultiStepLR(_opt(3e-5), warmup_steps=10, total_steps=100)
    lrs = _lrs(sched, 100)
    assert lrs[9] == pytest.approx(3e-5)
    assert lrs[79] == pytest.approx(3e-5)
    assert lrs[80] == pytest.approx(3e-5 * 0.316)
    assert lrs[89] == pytest.approx(3e-5 * 0.316)
    assert lrs[90] == pytest.approx(3e-5 * 0.1)
    assert lrs[99] == pytest.approx(3e-5 * 0.1)


def test_step_milestones_are_configurable_fractions_or_steps() -> None:
    frac = WarmupMultiStepLR(_opt(), warmup_steps=0, total_steps=10, milestones=[0.5], factors=[0.25])
    assert _lrs(frac, 10)[4:6] == pytest.approx([1.0, 0.25])
    absolute = WarmupMultiStepLR(_opt(), warmup_steps=0, total_steps=10, milestones=[3, 7], factors=[0.5, 0.2])
    assert _lrs(absolute, 10) == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.2])


@pytest.mark.parametrize("cls", [WarmupCosineLR, WarmupMultiStepLR])
def test_resume_from_state_dict_continues_exactly(cls: type) -> None:
    straight = _lrs(cls(_opt(), warmup_steps=3, total_steps=20), 20)
    first = cls(_opt(), warmup_steps=3, total_steps=20)
    _lrs(first, 8)
    state = first.state_dict()
    # a fresh optimizer and scheduler (as after a restart) loading the saved state
    opt = _opt()
    resumed = cls(opt, warmup_steps=3, total_steps=20)
    resumed.load_state_dict(state)
    opt.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert _lrs(resumed, 12) == pytest.approx(straight[8:])


def test_bad_schedule_settings_fail_with_the_key_name() -> None:
    with pytest.raises(ValueError, match="milestones and scheduler.factors"):
        WarmupMultiStepLR(_opt(), warmup_steps=0, total_steps=10, milestones=[0.5], factors=[])
    with pytest.raises(ValueError, match="scheduler.total_steps"):
        WarmupCosineLR(_opt(), warmup_steps=0, total_steps=0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        WarmupCosineLR(_opt(), warmup_steps=0, total_steps=5, min_lr_ratio=2.0)


def test_resume_takes_the_new_config_shape_and_keeps_the_position() -> None:
    old = WarmupMultiStepLR(_opt(), warmup_steps=0, total_steps=10)
    _lrs(old, 5)
    longer = WarmupMultiStepLR(_opt(), warmup_steps=0, total_steps=100)
    longer.load_state_dict(old.state_dict())
    assert longer.last_epoch == 5 and longer.total_steps == 100
    assert longer.milestone_steps == [80, 90]
