"""Fused output head + cross-entropy without keeping any logits: Liger-Kernel's and Apple's cut-cross-entropy idea in
plain PyTorch (docs/packing.md). The forward computes a chunk of logits at a time, its NLL and at once its gradients,
then drops the logits; the backward only scales the gradients."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

FUSED_CHUNK_BYTES = 64 * 2**20  # fp32 logits of one chunk: 163 positions of a 102,400-token vocabulary


def chunk_positions(vocab: int, chunk_bytes: int = FUSED_CHUNK_BYTES) -> int:
    """Positions per chunk so that a chunk's fp32 logits take at most `chunk_bytes` (at least 1)."""
    return max(1, chunk_bytes // (4 * vocab))


class FusedLinearCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(F.linear(states, weight, bias).float(), targets, reduction="sum")`` with the gradients
    computed in the forward, chunk by chunk; `states` (N, H) are the supervised positions only. Matmuls run in the
    autocast dtype as `nn.Linear` would, softmax and NLL in fp32. Not twice differentiable."""

    @staticmethod
    def forward(ctx: Any, states: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,  # type: ignore[override]
                chunk: int) -> Tensor:
        device_type = states.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else states.dtype
        need_states, need_weight, need_bias = ctx.needs_input_grad[:3]
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        grad_states = torch.empty_like(states) if need_states else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        total = torch.zeros((), dtype=torch.float32, device=states.device)
        with torch.autocast(device_type, enabled=False):
            for i in range(0, states.shape[0], chunk):
                h, t = states[i:i + chunk].to(dtype), targets[i:i + chunk]
                logits = (h @ w.T if b is None else torch.addmm(b, h, w.T)).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if not (need_states or need_weight or need_bias):
                    continue
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0  # d NLL / d logits
                if need_states:
                    grad_states[i:i + chunk] = grad.to(dtype) @ w
                if need_weight:  # accumulate in the weight's dtype: fp32 weights keep fp32 sums
                    grad_weight.addmm_(grad.T.to(grad_weight.dtype), h.to(grad_weight.dtype))
                if need_bias:
                    grad_bias += grad.sum(0)
                del logits, grad
        ctx.grads = (grad_states, grad_weight, None if grad_bias is None else grad_bias.to(bias.dtype))
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError("FusedLinearCrossEntropy: backward called twice (its gradients are scaled in place)")
        grads, ctx.grads = ctx.grads, None
        for g in grads:  # in place: a second copy of the weight gradient would add its size to the peak
            if g is not None:
                g.mul_(grad_output.to(g.dtype))
        return (*grads, None, None)
