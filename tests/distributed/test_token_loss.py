"""Token-exact loss under DDP x gradient accumulation (2 gloo processes x 3 micro-batches, forked
with torchrun's worker environment by tests/forked.py): the applied gradient is that of the one concatenated batch, and `train/loss` is its token mean."""
from __future__ import annotations

import json

import pytest

from ..forked import run_ranks
from . import token_loss_worker

pytestmark = pytest.mark.slow


def test_ddp_accumulated_gradient_equals_the_concatenated_batch_gradient(tmp_path):
    out = tmp_path / "result.json"
    proc = run_ranks(token_loss_worker.main, ["token_loss_worker.py", "--out", str(out)], 2, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    r = json.loads(out.read_text())
    assert r["tokens"] == 2 + 60 + 9 + 35 + 1 + 20
    assert r["max_grad_diff"] < 1e-5 < r["grad_scale"] * 1e-2, r
    assert r["logged_loss"] == pytest.approx(r["batch_loss"], abs=1e-5)
    # a mean of micro-batch means weighs the 1-token micro-batch like the 60-token one: a different number
    assert abs(r["mean_of_means"] - r["batch_loss"]) > 1e-3
