"""ModalitySchedule: values, determinism, window tightness (quota rule)."""
from __future__ import annotations

import math
import random

import pytest

from dsvl.data import ModalitySchedule


def test_values_linear_and_cosine():
    lin = ModalitySchedule(1.0, 0.7, warmup_steps=100, shape="linear")
    assert lin.language_ratio(0) == 1.0
    assert lin.language_ratio(50) == pytest.approx(0.85)
    assert lin.language_ratio(100) == lin.language_ratio(10_000) == 0.7
    cos = ModalitySchedule(1.0, 0.7, warmup_steps=100, shape="cosine")
    assert cos.language_ratio(50) == pytest.approx(0.85)
    assert cos.language_ratio(25) == pytest.approx(1.0 - 0.3 * (1 - math.cos(math.pi / 4)) / 2)
    assert ModalitySchedule(1.0, 0.7, warmup_steps=0).language_ratio(0) == 0.7
    for bad in (dict(start=1.5), dict(target=-0.1), dict(warmup_steps=-1), dict(shape="step")):
        with pytest.raises(ValueError):
            ModalitySchedule(**bad)


def test_deterministic_and_stateless():
    a, b = ModalitySchedule(1.0, 0.7, 300, "cosine"), ModalitySchedule(1.0, 0.7, 300, "cosine")
    seq = [a.modality(s) for s in range(2000)]
    assert seq == [b.modality(s) for s in range(2000)]
    # any query order gives the same answer (pure function of the step)
    steps = list(range(2000))
    random.Random(0).shuffle(steps)
    assert all(b.modality(s) == seq[s] for s in steps)
    assert seq[:20] == ["text"] * 20  # starts at 1.0
    assert a.state_dict() == {"start": 1.0, "target": 0.7, "warmup_steps": 300, "shape": "cosine"}


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize("W", [7, 20, 100])
def test_every_window_within_one_over_w(shape, W):
    s = ModalitySchedule(1.0, 0.7, warmup_steps=400, shape=shape)
    n = 1500
    is_text = [s.modality(k) == "text" for k in range(n)]
    ratios = [s.language_ratio(k) for k in range(n)]
    worst = 0.0
    for a in range(n - W + 1):
        realised = sum(is_text[a:a + W]) / W
        scheduled = sum(ratios[a:a + W]) / W
        worst = max(worst, abs(realised - scheduled))
    assert worst <= 1.0 / W + 1e-9
    # long-run share converges on the target
    assert sum(is_text[400:]) / (n - 400) == pytest.approx(0.7, abs=1.0 / (n - 400))


def test_random_draws_would_fail_the_same_bound():
    """Sanity of the test above: i.i.d. draws at the scheduled ratio break the 1/W bound."""
    rng = random.Random(0)
    W, n = 20, 1500
    draws = [rng.random() < 0.7 for _ in range(n)]
    worst = max(abs(sum(draws[a:a + W]) / W - 0.7) for a in range(n - W + 1))
    assert worst > 1.0 / W
