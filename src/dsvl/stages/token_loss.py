"""Token-exact loss of a global step: every supervised token of every micro-batch on every rank weighs the same.

Each micro-batch returns its token mean but carries the gradient of its NLL sum times accumulation x
world size (undoing Lightning's and DDP's averaging); `finish_step` divides the gradients by the global
token count once per step, before clipping (docs/packing.md, "Token-exact loss"). DeepSpeed keeps
gradients inside its engine: there the per-micro-batch mean is optimised as before.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import SumMetric


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by `scale`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def owns_gradients(trainer: Any) -> bool:
    """False under DeepSpeed, whose engine holds (and scales) the gradients itself."""
    from lightning.pytorch.strategies import DeepSpeedStrategy  # importable without deepspeed installed

    return not isinstance(getattr(trainer, "strategy", None), DeepSpeedStrategy)


class TokenExactLoss(nn.Module):
    """The running sums of a global step's micro-batches, synced over ranks once per step; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        # two sums rather than MeanMetric(weight=...): with nan_strategy="disable" (no host sync per update, and a
        # NaN must reach the NaN guard) torchmetrics 1.9 replaces the weights by ones (Lightning-AI/torchmetrics#3434)
        self.nll, self.tokens = SumMetric(nan_strategy="disable"), SumMetric(nan_strategy="disable")

    def micro_batch(self, loss: Tensor, count: Tensor, first: bool, accumulate: int, world_size: int,
                    exact: bool = True) -> Tensor:
        """What `training_step` returns for a micro-batch with mean NLL `loss` over `count` tokens
        (`first`: the first micro-batch of its global step)."""
        tokens = count.detach().float()
        if first:
            self.nll.reset()
            self.tokens.reset()
        self.nll.update(loss.detach().float() * tokens)  # tensors: no host sync per micro-batch
        self.tokens.update(tokens)
        if not exact:
            return loss
        return _ScaleGrad.apply(loss, tokens * float(accumulate * world_size))

    def finish_step(self, params: list[Tensor], exact: bool = True) -> tuple[Tensor, Tensor] | None:
        """Sync the sums over ranks once, divide `params`' gradients by the global token count (when
        `exact`) and return the global (NLL sum, token count) of the step."""
        if self.tokens.update_count == 0:
            return None
        nll, tokens = self.nll.compute(), self.tokens.compute()  # synced over ranks (torch.distributed, when running)
        self.nll.reset()
        self.tokens.reset()
        if exact:
            count = float(tokens)  # one host sync per optimizer step
            for p in params:
                if p.grad is not None:
                    p.grad.div_(max(count, 1.0))
        return nll, tokens
