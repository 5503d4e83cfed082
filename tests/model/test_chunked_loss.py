"""The training-path loss without full logits (fused head + cross-entropy for a plain linear head, checkpointed
chunks for any other head) equals the full-logits loss and its gradients (1e-5)."""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from dsvl.cli.models import build_model
from dsvl.model.fused_loss import chunk_positions
from dsvl.model.vlm import chunked_next_token_loss, fusable_head, next_token_loss

from ._tiny import make_batch

V, H = 300, 32


def _case(bias: bool = True, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(H, V, bias=bias).to(dtype)
    hidden = torch.randn(3, 41, H, generator=g).to(dtype).requires_grad_()
    labels = torch.randint(0, V, (3, 41), generator=g)
    labels[0, :30] = -100
    labels[2] = -100
    return head, hidden, labels


def _grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def _close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-5) -> bool:
    return all(float((x.float() - y.float()).abs().max()) < tol for x, y in zip(a, b))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_fused_loss_equals_full_loss_and_gradients(chunk, bias):
    head, hidden, labels = _case(bias)
    assert fusable_head(head)
    params = [hidden, head.weight] + ([head.bias] if bias else [])
    full_loss, full_n = next_token_loss(head(hidden), labels)
    loss, n = chunked_next_token_loss(hidden, head, labels, chunk=chunk)
    assert int(n) == int(full_n) == 11 + 40  # row 0: labels 30..40; row 1: 1..40; row 2: none
    assert abs(float(loss - full_loss)) < 1e-5
    # a non-unit upstream gradient (the token-exact loss scales every micro-batch) reaches every gradient
    assert _close(_grads(loss * 3.5, params), _grads(full_loss * 3.5, params))
    # nothing supervised: 0 with a graph, no NaN, zero gradients
    empty, count = chunked_next_token_loss(hidden, head, torch.full_like(labels, -100), chunk=chunk)
    assert int(count) == 0 and float(empty) == 0.0 and empty.requires_grad
    assert all(float(g.abs().max()) == 0.0 for g in _grads(empty, params))


def _largest_saved(fn) -> int:
    """numel of the largest tensor autograd saves for the backward of `fn()`'s loss."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()[0]
    loss.backward()
    return max(saved)


def test_fused_loss_keeps_no_logits_for_backward():
    head, hidden, labels = _case()
    assert _largest_saved(lambda: next_token_loss(head(hidden), labels)) >= 3 * 40 * V  # full path: the shifted logits
    assert _largest_saved(lambda: chunked_next_token_loss(hidden, head, labels)) < 41 * V  # fused: no logits
    assert chunk_positions(102_400) == 163  # 64 MB of fp32 logits per chunk at DeepSeek-LLM's vocabulary


def test_frozen_head_gets_no_weight_gradient():
    head, hidden, labels = _case()
    head.requires_grad_(False)
    full = _grads(next_token_loss(head(hidden), labels)[0], [hidden])
    loss, _ = chunked_next_token_loss(hidden, head, labels)
    loss.backward()
    assert _close([hidden.grad], full) and head.weight.grad is None and head.bias.grad is None


def test_bf16_and_autocast_match_the_full_path():
    """bf16 weights, and fp32 weights under bf16 autocast: matmuls in bf16 as `nn.Linear` runs them, softmax in fp32."""
    head, hidden, labels = _case(dtype=torch.bfloat16)
    params = [hidden, head.weight, head.bias]
    full_loss = next_token_loss(head(hidden), labels)[0]
    loss = chunked_next_token_loss(hidden, head, labels, chunk=16)[0]
    assert loss.dtype == torch.float32 and abs(float(loss - full_loss)) < 1e-4
    assert _close(_grads(loss, params), _grads(full_loss, params), tol=2e-3)  # bf16 rounding of the gradients
    head, hidden, labels = _case()
    params = [hidden, head.weight, head.bias]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full_loss = next_token_loss(head(hidden), labels)[0]
        loss = chunked_next_token_loss(hidden, head, labels, chunk=16)[0]
    assert abs(float(loss - full_loss)) < 1e-4
    got, ref = _grads(loss, params), _grads(full_loss, params)
    assert all(g.dtype == torch.float32 for g in got) and _close(got, ref, tol=2e-3)


@pytest.mark.parametrize("chunk", [7, None])
def test_other_heads_take_the_checkpointed_chunks(chunk):
    """A peft LoRA-wrapped head (and a hooked one) is not fused: its own forward runs, chunk by chunk."""
    head, hidden, labels = _case()
    wrapped = get_peft_model(torch.nn.ModuleDict({"head": head}),
                             LoraConfig(r=4, target_modules=["head"], init_lora_weights=False)).base_model.model["head"]
    assert not fusable_head(wrapped)
    params = [hidden, wrapped.lora_A["default"].weight, wrapped.lora_B["default"].weight]
    full_loss, _ = next_token_loss(wrapped(hidden), labels)
    loss, n = chunked_next_token_loss(hidden, wrapped, labels, chunk=chunk)
    assert int(n) == 51 and abs(float(loss - full_loss)) < 1e-5
    assert _close(_grads(loss, params), _grads(full_loss, params))
    hooked = torch.nn.Linear(H, V)
    hooked.register_forward_hook(lambda m, i, o: o * 2.0)
    assert not fusable_head(hooked)
    assert abs(float(chunked_next_token_loss(hidden, hooked, labels)[0] - next_token_loss(hooked(hidden), labels)[0])) < 1e-5


def test_training_forward_uses_the_chunked_loss_with_the_same_gradients(tiny_cfg):
    batch = make_batch([1, 2], seed=21)
    torch.manual_seed(5)
    model = build_model(tiny_cfg).train()
    assert fusable_head(model.llm.get_output_embeddings())
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for return_logits in (True, None):  # None: train mode with gradients -> the fused path
        out = model(**batch, return_logits=return_logits)
        assert (out.logits is None) == (return_logits is None)
        results.append((out.loss.detach(), torch.autograd.grad(out.loss, params, allow_unused=True)))
    (full_loss, full_grads), (loss, grads) = results
    assert abs(float(loss - full_loss)) < 1e-5
    assert all((a is None and b is None) or float((a - b).abs().max()) < 1e-5 for a, b in zip(grads, full_grads))
    with torch.no_grad():  # inference keeps the logits
        assert model(**batch).logits is not None
