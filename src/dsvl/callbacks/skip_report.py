"""End-of-run report of skipped samples: `skips.json` in the run dir, metrics in every logger.

Bad samples are counted where they are read (DataLoader workers, every rank); the datamodule's
`skip_counts()` merges the workers' counts, this callback sums the ranks'. It reads the datamodule
by duck typing (`skip_counts() -> .all_reduce() / .as_dict() / .summary()`), so it only needs Lightning.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def skip_counter(trainer: pl.Trainer) -> Any | None:
    """The datamodule's merged skip counter (None when the data has no accounting)."""
    counts = getattr(getattr(trainer, "datamodule", None), "skip_counts", None)
    return counts() if callable(counts) else None


class SkipReport(Callback):
    """Logs `data/skipped` each step; at the end `data/skipped/<reason>` and `<dirpath>/skips.json`."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.report: dict[str, Any] | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % max(int(trainer.accumulate_grad_batches), 1):
            return
        counter = skip_counter(trainer)
        if counter is not None:  # this rank's count; the end-of-run report sums the ranks
            pl_module.log("data/skipped", float(counter.total), on_step=True, batch_size=1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, reduce=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.world_size == 1:  # other ranks may not reach a collective after an error
            self._report(trainer, reduce=False)

    def _report(self, trainer: pl.Trainer, reduce: bool) -> None:
        counter = skip_counter(trainer)
        if counter is None:
            return
        if reduce:
            counter = counter.all_reduce()
        by_reason = {str(k): int(v) for k, v in counter.as_dict().items()}
        self.report = {"total": int(sum(by_reason.values())), "by_reason": by_reason, "global_step": int(trainer.global_step)}
        if not trainer.is_global_zero:
            return
        log.info("data: %s", counter.summary())
        path = Path(self.dirpath or trainer.default_root_dir) / "skips.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.report, indent=2, sort_keys=True) + "\n")
        metrics = {"data/skipped": float(self.report["total"])} | {f"data/skipped/{k}": float(v) for k, v in by_reason.items()}
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            lg.save()
