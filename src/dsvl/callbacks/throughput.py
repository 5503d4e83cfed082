"""Per-global-step throughput: tokens/s, samples/s and the padding fraction of the step's batches.

Reads only the batch's `stats` dict (`samples`, `tokens`, `pad_tokens`, the data contract in
docs/architecture.md), so it works with any LightningModule whose batches carry it.
"""
from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


def _stat(batch: Any, key: str) -> float:
    stats = batch.get("stats") if isinstance(batch, dict) else None
    return float(stats.get(key, 0)) if isinstance(stats, dict) else 0.0


class ThroughputMonitor(Callback):
    """Logs `perf/tokens_per_s`, `perf/samples_per_s`, `perf/padding_frac` once per optimizer step.

    Time runs from the first micro-batch of a global step to the end of its last, so data loading
    between steps is excluded and optimizer time included. `tokens` counts real (non-pad) tokens.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._acc = {"samples": 0.0, "tokens": 0.0, "pad_tokens": 0.0}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        for key in self._acc:
            self._acc[key] += _stat(batch, key)
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
        last_batch = trainer.num_training_batches != float("inf") and batch_idx + 1 >= trainer.num_training_batches
        if (batch_idx + 1) % accumulate and not last_batch:
            return
        elapsed = max(time.perf_counter() - (self._start or time.perf_counter()), 1e-9)
        size = max(int(self._acc["samples"]), 1)
        real = self._acc["tokens"]
        total = real + self._acc["pad_tokens"]
        pl_module.log("perf/tokens_per_s", real / elapsed, on_step=True, batch_size=size)
        pl_module.log("perf/samples_per_s", self._acc["samples"] / elapsed, on_step=True, batch_size=size)
        pl_module.log("perf/padding_frac", self._acc["pad_tokens"] / total if total else 0.0, on_step=True, batch_size=size)
        self._start = None
        self._acc = dict.fromkeys(self._acc, 0.0)
