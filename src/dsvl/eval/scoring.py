"""Per-row NLL from logits, and option scoring for multiple choice in one forward pass (a
`MultipleChoiceCollator` batch has one row per option, labelled on the option's tokens only)."""
from __future__ import annotations

from collections.abc import Mapping
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100
# The batch keys `VisionLanguageModel.forward` reads (docs/architecture.md); anything else in a
# batch (labels, keys, stats, MC bookkeeping) stays out of the call.
FORWARD_KEYS = ("input_ids", "attention_mask", "position_ids", "pixel_values", "high_res_pixel_values")


def forward_inputs(batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """The subset of a batch that the model's forward takes (absent or None keys left out)."""
    return {k: batch[k] for k in FORWARD_KEYS if batch.get(k) is not None}


def to_model_device(batch: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """A batch's tensors on the model's device; floating ones (images) in its dtype."""
    param = next(model.parameters())
    return {k: v.to(param.device, dtype=param.dtype if v.is_floating_point() else None) if isinstance(v, Tensor) else v
            for k, v in batch.items()}


def sequence_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL (float32) and number of scored tokens (int64) per row.

    labels are unshifted (like transformers), -100 is not scored. Only scored positions go through
    log-softmax, so memory stays at the logits the model already returned.
    """
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(target)[mask]
    picked = logits[:, :-1][mask].float()
    nll = F.cross_entropy(picked, target[mask], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device).index_add_(0, rows, nll)
    return sums, mask.sum(dim=1)


PIXEL_KEYS = ("pixel_values", "high_res_pixel_values")


def shared_image_embeds(model: nn.Module, batch: Mapping[str, Any]) -> Tensor | None:
    """Image features of every row of a multiple-choice batch, each question's images encoded once.

    The collator gives every option row its question's images (pixels in row order); only the copy
    of the question's first row (`row_option == 0`) goes through the towers and the adaptor.
    """
    pixels = {k: batch[k] for k in PIXEL_KEYS if batch.get(k) is not None}
    if not pixels:
        return None
    per_row = ((batch["input_ids"] == model.image_token_id).sum(dim=1) // model.num_image_tokens).tolist()
    row_sample, row_option = batch["row_sample"].tolist(), batch["row_option"].tolist()
    starts = [0, *accumulate(per_row)]  # each row's first pixel row
    first = {row_sample[r]: r for r in range(len(per_row)) if row_option[r] == 0}
    source = [starts[first[s]] + i for s, n in zip(row_sample, per_row) for i in range(n)]
    pick, inverse = torch.unique(torch.tensor(source, dtype=torch.long), return_inverse=True)
    features = model.encode_images(**{k: v.index_select(0, pick.to(v.device)) for k, v in pixels.items()})
    return features.index_select(0, inverse.to(features.device))


@torch.no_grad()
def score_options(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Mean NLL of each option's tokens given its prompt (and images): (num_samples, max_options).

    Rows are placed by the batch's `row_sample` / `row_option`; options a sample lacks score `inf`,
    so they are never predicted.
    """
    inputs = {k: v for k, v in forward_inputs(batch).items() if k not in PIXEL_KEYS}
    out = model(**inputs, image_embeds=shared_image_embeds(model, batch))
    sums, counts = sequence_nll(out.logits, batch["labels"])
    if bool((counts == 0).any()):
        raise ValueError("a multiple-choice row has no option tokens to score (truncated prompt?)")
    row_sample, row_option = batch["row_sample"].to(sums.device), batch["row_option"].to(sums.device)
    scores = torch.full((len(batch["answer"]), int(row_option.max()) + 1), float("inf"), device=sums.device)
    scores[row_sample, row_option] = sums / counts
    return scores
