"""Per-row NLL from logits, and option scoring for multiple choice in one forward pass.

A multiple-choice batch (`dsvl.data.multiple_choice.MultipleChoiceCollator`) flattens every
(question, option) pair into one row whose labels are -100 except on the option's tokens; a
single model forward over all rows then gives every option's mean NLL.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FORWARD_KEYS", "forward_inputs", "sequence_nll", "score_options"]

IGNORE_INDEX = -100
# The batch keys `VisionLanguageModel.forward` reads (docs/architecture.md); anything else in a
# batch (labels, keys, stats, MC bookkeeping) stays out of the call.
FORWARD_KEYS = ("input_ids", "attention_mask", "position_ids", "pixel_values", "high_res_pixel_values")


def forward_inputs(batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """The subset of a batch that the model's forward takes (absent or None keys left out)."""
    return {k: batch[k] for k in FORWARD_KEYS if batch.get(k) is not None}


def sequence_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL and number of scored tokens per row.

    labels are unshifted (like transformers): position t's logits predict labels[t + 1];
    -100 is not scored. Only scored positions go through log-softmax, so memory stays at the
    logits the model already returned. Returns float32 (R,) sums and int64 (R,) counts.
    """
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(target)[mask]
    picked = logits[:, :-1][mask].float()
    nll = F.cross_entropy(picked, target[mask], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device).index_add_(0, rows, nll)
    return sums, mask.sum(dim=1)


@torch.no_grad()
def score_options(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Mean NLL of each option's tokens given its prompt (and images): (num_samples, max_options).

    `batch` is a multiple-choice batch: rows (question, option) with `row_sample` / `row_option`
    saying which sample and option each row is. Options a sample lacks score `inf`, so they are
    never predicted. One forward pass covers all rows.
    """
    out = model(**forward_inputs(batch))
    sums, counts = sequence_nll(out.logits, batch["labels"])
    if bool((counts == 0).any()):
        raise ValueError("a multiple-choice row has no option tokens to score (truncated prompt?)")
    row_sample = batch["row_sample"].to(sums.device)
    row_option = batch["row_option"].to(sums.device)
    num_samples = int(batch["answer"].shape[0])
    num_options = int(row_option.max()) + 1 if row_option.numel() else 0
    scores = torch.full((num_samples, num_options), float("inf"), device=sums.device)
    scores[row_sample, row_option] = sums / counts
    return scores
