"""NonFiniteGuard's stop message after a restart (its counters come back from the checkpoint)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dsvl.callbacks import NonFiniteGuard, NonFiniteLossError


def test_resumed_guard_names_the_first_bad_step() -> None:
    guard = NonFiniteGuard(max_consecutive=2)
    guard.load_state_dict({"skipped": 1, "consecutive": 1})  # step 6 was bad, then the job restarted
    param = torch.nn.Parameter(torch.zeros(1))
    param.grad = torch.tensor([float("nan")])
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(), strategy=object(), world_size=1, global_step=7,
                              checkpoint_callback=None)
    with pytest.raises(NonFiniteLossError, match=r"2 consecutive steps .*\(steps 6-7\)"):
        guard.on_before_optimizer_step(trainer, None, torch.optim.SGD([param], lr=0.1))
    assert param.grad is None  # the bad update was dropped
