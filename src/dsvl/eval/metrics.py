"""Validation metrics: multiple choice by perplexity, held-out text perplexity, multimodal loss.

All three are torchmetrics `Metric`s, so Lightning syncs them across ranks and resets them per
epoch. DeepSeek-VL paper: DeepSeek-VL watches stage 2 by multi-choice PPL (generation of small models is
too noisy) and language forgetting by perplexity on held-out text.

Under DDP, Lightning's `DistributedSampler` pads the last round by repeating up to
`world_size - 1` samples. `MultipleChoiceAccuracy` therefore keeps one row per sample with a
64-bit hash of the sample key and counts each key once after the sync. The token-mean metrics
keep only sums (a per-sample list of every validation token would not scale); there a repeated
sample adds its tokens twice, which is at most `world_size - 1` samples per validation set.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "MultipleChoiceAccuracy",
    "MultipleChoiceResult",
    "TextPerplexity",
    "MultimodalLoss",
    "key_to_id",
]

CATEGORY_BYTES = 64  # category names are synced as fixed-width UTF-8 rows; longer names are cut
UNCATEGORIZED = "default"


def key_to_id(key: str) -> int:
    """A stable signed 64-bit id for a sample key, equal on every rank (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def _random_ids(n: int) -> Tensor:
    """Ids for samples without keys: unique with overwhelming probability, so never deduplicated."""
    return torch.frombuffer(bytearray(os.urandom(8 * n)), dtype=torch.int64).clone() if n else torch.empty(0, dtype=torch.int64)


def _encode_categories(categories: Sequence[str]) -> Tensor:
    rows = torch.zeros(len(categories), CATEGORY_BYTES, dtype=torch.uint8)
    for i, name in enumerate(categories):
        raw = name.encode("utf-8")[:CATEGORY_BYTES]
        if raw:
            rows[i, : len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return rows


def _decode_category(row: Tensor) -> str:
    raw = bytes(row.tolist()).rstrip(b"\x00")
    return raw.decode("utf-8", errors="ignore") or UNCATEGORIZED


class MultipleChoiceResult(dict):
    """`{"accuracy": float, "num_samples": int, "per_category": {name: {"accuracy", "num_samples"}}}`."""


class MultipleChoiceAccuracy(Metric):
    """Accuracy of multiple choice by perplexity: the predicted option is the one of lowest NLL.

    `update` takes the per-option scores of a batch (mean NLL of each option's tokens, from
    `dsvl.eval.score_options`), the index of the right option, and optionally the category and
    the key of each sample. `compute()` gives overall accuracy (a scalar, what Lightning logs);
    `summary()` adds per-category accuracy and counts. Samples with the same key count once,
    so the repeats of a distributed sampler never count twice.

    `mode` ("text" or "letter") records what was scored: the option texts, or their letters
    after a prompt that lists the lettered options (`dsvl.data.multiple_choice`). It only names
    the result; the batches decide what is scored.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, mode: str = "text", **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in ("text", "letter"):
            raise ValueError(f"mode must be 'text' or 'letter', got {mode!r}")
        self.mode = mode
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("categories", default=[], dist_reduce_fx="cat")

    def update(
        self,
        option_nll: Tensor,
        answer: Tensor,
        categories: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
    ) -> None:
        """Record a batch.

        option_nll: (B, K) float; options a sample does not have are `inf` (or nan).
        answer: (B,) index of the right option.
        """
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
        scores = torch.nan_to_num(option_nll.detach().float(), nan=math.inf)
        predicted = scores.argmin(dim=1)
        self.correct.append((predicted == answer).to(torch.int64))
        ids = torch.tensor([key_to_id(k) for k in keys], dtype=torch.int64) if keys is not None else _random_ids(batch)
        self.ids.append(ids.to(option_nll.device))
        cats = categories if categories is not None else [UNCATEGORIZED] * batch
        self.categories.append(_encode_categories(cats).to(option_nll.device))

    def _empty_states(self) -> dict[str, Tensor]:
        return {
            "ids": torch.empty(0, dtype=torch.int64, device=self.device),
            "correct": torch.empty(0, dtype=torch.int64, device=self.device),
            "categories": torch.empty(0, CATEGORY_BYTES, dtype=torch.uint8, device=self.device),
        }

    def _sync_dist(self, *args: Any, **kwargs: Any) -> None:
        """A rank that saw no MC batch gathers typed empty rows (torchmetrics would send float32 `[]`,
        which does not match the other ranks' int64 / uint8 rows)."""
        for name, empty in self._empty_states().items():
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                state.append(empty)
        super()._sync_dist(*args, **kwargs)

    def _unique(self) -> tuple[Tensor, Tensor]:
        """Correctness and category rows with each sample id kept once (its first occurrence)."""
        states = {name: getattr(self, name) for name in ("ids", "correct", "categories")}
        if any(isinstance(v, list) and not v for v in states.values()):
            empty = self._empty_states()
            return empty["correct"], empty["categories"]
        ids, correct, cats = (dim_zero_cat(states[n]) for n in ("ids", "correct", "categories"))
        if ids.numel() == 0:
            return correct[:0], cats[:0]
        _, inverse = torch.unique(ids, return_inverse=True)
        order = torch.arange(ids.numel(), device=ids.device)
        first = torch.full((int(inverse.max()) + 1,), ids.numel(), dtype=torch.long, device=ids.device)
        first = first.scatter_reduce(0, inverse, order, reduce="amin")
        return correct[first], cats[first]

    def compute(self) -> Tensor:
        """Overall accuracy over unique samples (nan before any update)."""
        correct, _ = self._unique()
        if correct.numel() == 0:
            return torch.tensor(float("nan"))
        return correct.float().mean()

    def summary(self) -> MultipleChoiceResult:
        """Overall and per-category accuracy with sample counts, synced across ranks."""
        with self.sync_context(should_sync=not self._is_synced):
            correct, cats = self._unique()
        per_category: dict[str, dict[str, float | int]] = {}
        if correct.numel():
            uniq, inverse = torch.unique(cats.cpu(), dim=0, return_inverse=True)
            correct = correct.cpu()
            for index in range(uniq.shape[0]):
                mask = inverse == index
                per_category[_decode_category(uniq[index])] = {
                    "accuracy": float(correct[mask].float().mean()),
                    "num_samples": int(mask.sum()),
                }
        return MultipleChoiceResult(
            accuracy=float(correct.float().mean()) if correct.numel() else float("nan"),
            num_samples=int(correct.numel()),
            per_category=dict(sorted(per_category.items())),
            mode=self.mode,
        )


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
