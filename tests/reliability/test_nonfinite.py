"""Non-finite steps: an injected NaN loss skips the update (weights untouched), also when its gradients are
finite (step 1: NaN added as a constant; steps 3-4: loss and gradients NaN), and is counted as
`train/nonfinite_skipped`; `max_consecutive` bad steps in a row stop the run with one line and exit 2,
leaving a finite last.ckpt equal to the last good weights."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from .conftest import EXIT_USER_ERROR, read_records, recorder, run_train_forked, stage2

NAN_LOSS_ONLY = [1]  # step 1 alone: NaN loss, finite gradients (skipped, run goes on)
POISONED = [3, 4]  # steps 3-4 in a row, NaN gradients too (limit 2: stop)


@pytest.fixture(scope="module")
def run(demo_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nonfinite")
    proc = run_train_forked(stage2(demo_data, tmp / "run", *recorder(tmp / "rec.jsonl"), "callbacks.nonfinite_guard.max_consecutive=2",
                            "+callbacks.poison._target_=reliability_hooks.PoisonLoss", f"+callbacks.poison.steps={POISONED}",
                            f"+callbacks.poison.add_steps={NAN_LOSS_ONLY}",
                            max_steps=8, workers=0))
    return proc, read_records(tmp / "rec.jsonl"), tmp / "run"


def _weights(records: list[dict], step: int) -> float:
    return next(r["weights"] for r in records if r["step"] == step and r["micro"] == 0)


def test_nan_step_is_skipped_without_update(run):
    _, records, _ = run
    assert _weights(records, 1) != _weights(records, 0)  # step 0 trained
    assert _weights(records, 2) == _weights(records, 1)  # step 1 (NaN loss, finite gradients) changed nothing
    assert _weights(records, 3) != _weights(records, 2)  # training goes on after one bad step
    assert _weights(records, 4) == _weights(records, 3)
    assert all(math.isfinite(r["weights"]) for r in records)


def test_consecutive_nan_steps_stop_with_one_line(run):
    proc, records, _ = run
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_USER_ERROR, out[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dsvl-train: error:")]
    assert len(errors) == 1 and "2 consecutive steps with non-finite loss or gradients (steps 3-4)" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in out
    assert max(r["step"] for r in records) == 4  # stopped in step 4, never reached step 5


def test_skips_are_logged(run):
    _, _, run_dir = run
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    skipped = {int(float(r["step"])): float(r["train/nonfinite_skipped"]) for r in rows if r.get("train/nonfinite_skipped")}
    assert skipped[0] == 0.0 and skipped[1] == 1.0 and skipped[2] == 1.0 and skipped[3] == 2.0, skipped


def test_last_checkpoint_is_the_last_good_state(run):
    _, records, run_dir = run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # saved after step 3, whose update was dropped
    state = ckpt["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    trainable = [t.double() for k, t in state.items() if k.startswith(("model.adaptor.", "model.llm."))]
    checksum = float(sum((t.abs() + t).sum() for t in trainable))
    assert checksum == pytest.approx(_weights(records, 4), rel=1e-12)
