"""Batch sizes for Lightning's `ThroughputMonitor` (`conf/callbacks/default.yaml`): samples and real
(non-pad) tokens, from the batch's `stats` dict (the data contract in docs/architecture.md), else
from its tensors (multiple-choice validation batches carry no stats)."""
from __future__ import annotations

from typing import Any


def _stat(batch: Any, key: str) -> int:
    stats = batch.get("stats") if isinstance(batch, dict) else None
    return int(stats.get(key, 0)) if isinstance(stats, dict) else 0


def batch_samples(batch: Any) -> int:
    """Samples (rows) in a micro-batch (`batch_size_fn`)."""
    return _stat(batch, "samples") or int(batch["input_ids"].shape[0])


def batch_tokens(batch: Any) -> int:
    """Real tokens in a micro-batch (`length_fn`: `train/items_per_sec` is tokens per second)."""
    return _stat(batch, "tokens") or int(batch["attention_mask"].sum())
