"""Token-exact loss under DDP x gradient accumulation (2 gloo processes x 3 micro-batches, torchrun):
the applied gradient is that of the one concatenated batch, and `train/loss` is its token mean."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_distributed import _free_port

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


def test_ddp_accumulated_gradient_equals_the_concatenated_batch_gradient(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "token_loss_worker.py"), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    r = json.loads(out.read_text())
    assert r["tokens"] == 2 + 60 + 9 + 35 + 1 + 20
    assert r["max_grad_diff"] < 1e-5 < r["grad_scale"] * 1e-2, r
    assert r["logged_loss"] == pytest.approx(r["batch_loss"], abs=1e-5)
    # a mean of micro-batch means weighs the 1-token micro-batch like the 60-token one: a different number
    assert abs(r["mean_of_means"] - r["batch_loss"]) > 1e-3
