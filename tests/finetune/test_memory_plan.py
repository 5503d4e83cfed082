"""tools/memory_plan.py against measured tensors on a tiny model (CPU, fp32): counts, weight, gradient and AdamW
bytes exactly; the activation formula within 25% of what autograd saves (plus the logits the step holds)."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dsvl.cli.models import build_model
from dsvl.cli.presets import model_config
from dsvl.model.lora import LoraSettings
from dsvl.stages.freezing import apply_freezing

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import memory_plan as mp  # noqa: E402

from tests.model._tiny import make_batch  # noqa: E402

LORA = LoraSettings(r=4, alpha=8, dropout=0.05, targets={"llm": mp.LLM_TARGETS})
FP32 = dict(weight_bytes=4.0, grad_bytes=4.0, optim_bytes=8.0, act_bytes=4.0)  # what a CPU fp32 run holds
SEQ = 128


def _real(mode: mp.Mode) -> torch.nn.Module:
    cfg = model_config("tiny")
    if mode.lora:
        cfg["lora"] = {"r": LORA.r, "alpha": LORA.alpha, "dropout": LORA.dropout, "targets": LORA.targets}
    torch.manual_seed(0)
    model = build_model(cfg)
    apply_freezing(model, mode.trainable)
    return model


def _step_inputs() -> dict:
    ids = torch.randint(3, 1000, (1, SEQ))
    return {"input_ids": ids, "labels": ids}


@pytest.mark.parametrize("name", ["full", "lora"])
def test_counts_weights_grads_and_adamw_state_are_exact(name: str) -> None:
    mode = replace(mp.MODES[name], **FP32)
    planned = mp.state_bytes(mp.meta_model(model_config("tiny"), mode, LORA), mode)
    model = _real(mode)
    params = [p for p in model.parameters()]
    assert planned["params"] == sum(p.numel() for p in params)
    assert planned["trainable"] == sum(p.numel() for p in params if p.requires_grad) > 0
    assert planned["weights"] == sum(p.numel() * p.element_size() for p in params)
    trainable = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    model(**make_batch([1, 2])).loss.backward()  # images too: the trained SigLIP gets gradients
    optimizer.step()
    assert planned["grads"] == sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for k, t in s.items() if k != "step")
    assert planned["optimizer"] == state


@pytest.mark.parametrize("name", ["full", "lora"])
def test_activation_estimate_is_within_25_percent_of_saved_tensors(name: str) -> None:
    mode = replace(mp.MODES[name], trainable=("adaptor", "llm"), **FP32)  # text-only batch: no tower activations
    model = _real(mode).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**_step_inputs())
    assert out.logits is None  # training's chunked loss never materialises the full logits
    measured = sum(saved.values())
    estimate = mp.activation_bytes(mp.meta_model(model_config("tiny"), mode, LORA), mode, SEQ, checkpointing=False, lora=LORA,
                                   transient=False)  # saved-for-backward only, what the hooks see
    assert 0.75 <= estimate / measured <= 1.25, (estimate, measured)


def test_the_table_covers_both_models_three_modes_and_three_gpus(capsys) -> None:
    rows = [{"model": m, "mode": k, "checkpointing": c, "params": 1e9, "trainable": 1e6, "weights": 1.0, "grads": 1.0,
             "optimizer": 1.0, "activations": 1.0, "total": 30e9, **{f"fits_{g}": 30 <= g for g in mp.GPUS_GB}}
            for m in mp.MODELS for k in mp.MODES for c in (False, True)]
    table = mp.markdown(rows, 4096)
    assert table.count("\n| 7B |") == 6 and "| 24 GB | 40 GB | 80 GB |" in table and "| no | yes | yes |" in table
