"""A shortened `dsvl-demo ablation`: ablation.json's structure, every variant trained, the plot."""
from __future__ import annotations

import json
import math

import torch

from dsvl.cli.ablation import VARIANTS

SMALL = ["stage.global_batch=4", "data.micro_batch_size=4", "data.val_batch_size=8", "data.val_max_batches=1",
         "mc_val.limit=8", "mc_val.batch_size=8", "scheduler.warmup_steps=1", "++trainer.enable_progress_bar=false"]


def _llm_weights(checkpoint):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if ".llm." in k}


def test_short_ablation(demo_dir, tmp_path):
    from dsvl.cli.ablation import run_ablation

    out = tmp_path / "ablation"
    run_ablation(out, demo_dir, [*SMALL, "data.schedule.warmup_steps=1"], steps=2, val_every=1,
                 stage1_overrides=["trainer.max_steps=1"], eval_limit=8)
    report = json.loads((out / "ablation.json").read_text())
    assert set(report["variants"]) == set(VARIANTS)
    assert math.isfinite(report["reference_text_ppl"]) and report["reference_text_ppl"] > 1
    stage1 = _llm_weights(report["stage1_checkpoint"])
    for name, v in report["variants"].items():
        assert v["steps"] == 2 and v["samples"] == 8, name
        assert math.isfinite(v["text_ppl"]) and v["text_ppl"] > 1, name
        assert 0.0 <= v["mc_accuracy"] <= 1.0 and v["seconds"] > 0 and v["samples_per_s"] > 0, name
        for curve in ("text_ppl", "mc_accuracy"):  # validated after each of the 2 steps
            steps = [s for s, _ in v["curves"][curve]]
            assert len(steps) == 2 and steps[0] < steps[1], (name, curve, steps)
        trained = _llm_weights(v["checkpoint"])
        assert any(not torch.equal(trained[k], stage1[k]) for k in stage1), f"{name}: the LLM did not train"
    assert report["variants"]["no_text"]["text_share"] == 0.0
    assert report["variants"]["grouped"]["text_share"] > 0.0
    assert report["variants"]["mixed"]["overrides"] == ["data.mode=mixed"]
    assert (out / "ablation.png").stat().st_size > 10_000
