"""Validation metrics: multiple choice by perplexity, held-out text perplexity, multimodal loss.

torchmetrics `Metric`s, so Lightning syncs and resets them. DeepSeek-VL watches stage 2 by multi-choice
PPL (generation of small models is too noisy) and language forgetting by held-out text perplexity.

Under DDP, Lightning's `DistributedSampler` repeats up to `world_size - 1` samples in the last round:
`MultipleChoiceAccuracy` keeps a 64-bit hash of each sample key and counts each key once after the
sync. The token-mean metrics keep only sums (a per-token list would not scale), so there a repeated
sample counts twice: at most `world_size - 1` samples per validation set.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat

CATEGORY_BYTES = 64  # category names are synced as fixed-width UTF-8 rows; longer names are cut
UNCATEGORIZED = "default"
# each state of MultipleChoiceAccuracy with the shape and dtype of its rows
STATES = {"ids": ((0,), torch.int64), "correct": ((0,), torch.int64), "categories": ((0, CATEGORY_BYTES), torch.uint8)}


def key_to_id(key: str) -> int:
    """A stable signed 64-bit id for a sample key, equal on every rank (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class MultipleChoiceAccuracy(Metric):
    """Accuracy of multiple choice by perplexity (the option of lowest NLL, `dsvl.eval.score_options`);
    `compute()` is what Lightning logs, `summary()` adds categories. `mode` only names the result."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, mode: str = "text", **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in ("text", "letter"):
            raise ValueError(f"mode must be 'text' or 'letter', got {mode!r}")
        self.mode = mode
        for name in STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, option_nll: Tensor, answer: Tensor, categories: Sequence[str] | None = None,
               keys: Sequence[str] | None = None) -> None:
        """option_nll: (B, K) float, `inf` (or nan) for options a sample lacks; answer: (B,) right option."""
        if option_nll.ndim != 2:
            raise ValueError(f"option_nll must be (batch, options), got shape {tuple(option_nll.shape)}")
        batch = option_nll.shape[0]
        answer = torch.as_tensor(answer, device=option_nll.device).reshape(-1).long()
        if answer.numel() != batch:
            raise ValueError(f"{answer.numel()} answers for {batch} samples")
        if bool(((answer < 0) | (answer >= option_nll.shape[1])).any()):
            raise ValueError("answer index out of range of the options")
        for name, seq in (("categories", categories), ("keys", keys)):
            if seq is not None and len(seq) != batch:
                raise ValueError(f"{len(seq)} {name} for {batch} samples")
        predicted = torch.nan_to_num(option_nll.detach().float(), nan=math.inf).argmin(dim=1)
        self.correct.append((predicted == answer).to(torch.int64))
        # samples without keys get random ids: unique with overwhelming probability, never merged
        ids = [key_to_id(k) for k in keys] if keys is not None else [key_to_id(os.urandom(16).hex()) for _ in range(batch)]
        self.ids.append(torch.tensor(ids, dtype=torch.int64, device=option_nll.device))
        cats = categories if categories is not None else [UNCATEGORIZED] * batch
        rows = [list(name.encode("utf-8")[:CATEGORY_BYTES].ljust(CATEGORY_BYTES, b"\x00")) for name in cats]
        self.categories.append(torch.tensor(rows, dtype=torch.uint8, device=option_nll.device).reshape(-1, CATEGORY_BYTES))

    def _states(self) -> list[Tensor]:
        """The states as tensors; typed empty rows for a state no update filled."""
        return [dim_zero_cat(getattr(self, name)) if len(getattr(self, name))
                else torch.empty(shape, dtype=dtype, device=self.device) for name, (shape, dtype) in STATES.items()]

    def _sync_dist(self, *args: Any, **kwargs: Any) -> None:
        """A rank that saw no MC batch gathers typed empty rows (torchmetrics would send float32 `[]`,
        which does not match the other ranks' int64 / uint8 rows)."""
        for name, state in zip(STATES, self._states()):
            setattr(self, name, [state])
        super()._sync_dist(*args, **kwargs)

    def _unique(self) -> tuple[Tensor, Tensor]:
        """Correctness and category rows with each sample id kept once (its first occurrence)."""
        ids, correct, cats = self._states()
        first = torch.from_numpy(np.unique(ids.cpu().numpy(), return_index=True)[1]).to(ids.device)
        return correct[first], cats[first]

    def compute(self) -> Tensor:
        """Overall accuracy over unique samples (nan before any update)."""
        correct, _ = self._unique()
        return correct.float().mean() if correct.numel() else torch.tensor(float("nan"))

    def summary(self) -> dict[str, Any]:
        """`{"accuracy", "num_samples", "per_category": {name: {"accuracy", "num_samples"}}, "mode"}`,
        synced across ranks."""
        with self.sync_context(should_sync=not self._is_synced):
            correct, cats = self._unique()
        per_category: dict[str, dict[str, float | int]] = {}
        uniq, inverse = torch.unique(cats.cpu(), dim=0, return_inverse=True)
        for index in range(uniq.shape[0]):
            mask = inverse == index
            name = bytes(uniq[index].tolist()).rstrip(b"\x00").decode("utf-8", errors="ignore") or UNCATEGORIZED
            per_category[name] = {"accuracy": float(correct.cpu()[mask].float().mean()), "num_samples": int(mask.sum())}
        return {"accuracy": float(correct.float().mean()) if correct.numel() else float("nan"),
                "num_samples": int(correct.numel()), "per_category": dict(sorted(per_category.items())), "mode": self.mode}


class MultimodalLoss(MeanMetric):
    """Token-weighted mean NLL (logged `val/mm_loss` on multimodal validation batches): torchmetrics'
    `MeanMetric` weighted by token counts, in float64 so long validation sets do not drift."""

    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(nan_strategy="ignore", **kwargs)  # a batch with no supervised tokens has loss nan
        self.set_dtype(torch.float64)

    def update(self, loss: Tensor, num_tokens: Tensor | int) -> None:  # type: ignore[override]
        """Add a batch given its mean token NLL (`VLMOutput.loss`) and token count (`.num_loss_tokens`);
        both may also be per-row vectors (e.g. from `dsvl.eval.sequence_nll` as sum / count)."""
        loss = torch.as_tensor(loss).detach().reshape(-1)
        super().update(loss, torch.as_tensor(num_tokens, device=loss.device).detach().reshape(-1))

    def compute(self) -> Tensor:
        return super().compute().float()


class TextPerplexity(MultimodalLoss):
    """`exp(sum NLL / sum tokens)` on held-out text: the language-retention signal (logged `val/text_ppl`)."""

    def compute(self) -> Tensor:
        return torch.exp(super().compute())
