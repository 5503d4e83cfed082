"""The chunked next-token loss (training path) equals the full-logits loss and its gradients (1e-5)."""
from __future__ import annotations

import pytest
import torch

from dsvl.model import build_model
from dsvl.model.vlm import chunked_next_token_loss, next_token_loss

from ._tiny import make_batch


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_loss_equals_full_loss_and_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 300, bias=True)
    hidden = torch.randn(3, 41, 32, generator=g, requires_grad=True)
    labels = torch.randint(0, 300, (3, 41), generator=g)
    labels[0, :30] = -100
    labels[2] = -100
    full_loss, full_n = next_token_loss(head(hidden), labels)
    full = torch.autograd.grad(full_loss, [hidden, head.weight, head.bias])
    loss, n = chunked_next_token_loss(hidden, head, labels, chunk=chunk)
    got = torch.autograd.grad(loss, [hidden, head.weight, head.bias])
    assert int(n) == int(full_n) == 11 + 40  # row 0: labels 30..40; row 1: 1..40; row 2: none
    assert abs(float(loss - full_loss)) < 1e-5
    assert all(float((a - b).abs().max()) < 1e-5 for a, b in zip(got, full))
    # nothing supervised: 0 with a graph, no NaN
    empty, count = chunked_next_token_loss(hidden, head, torch.full_like(labels, -100), chunk=chunk)
    assert int(count) == 0 and float(empty) == 0.0 and empty.requires_grad


def test_training_forward_uses_the_chunked_loss_with_the_same_gradients(tiny_cfg):
    batch = make_batch([1, 2], seed=21)
    torch.manual_seed(5)
    model = build_model(tiny_cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for return_logits in (True, None):  # None: train mode with gradients -> the chunked path
        out = model(**batch, return_logits=return_logits)
        assert (out.logits is None) == (return_logits is None)
        results.append((out.loss.detach(), torch.autograd.grad(out.loss, params, allow_unused=True)))
    (full_loss, full_grads), (loss, grads) = results
    assert abs(float(loss - full_loss)) < 1e-5
    assert all((a is None and b is None) or float((a - b).abs().max()) < 1e-5 for a, b in zip(grads, full_grads))
    with torch.no_grad():  # inference keeps the logits
        assert model(**batch).logits is not None
