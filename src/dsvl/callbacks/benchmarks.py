"""Public benchmarks at every validation (`val_benchmarks`), logged as `val/bench/<name>/accuracy`
(`.../ppl` for `text_ppl`) and `val/bench/<name>/num_samples`, as the paper's Figures 8 and 9 watch stage 2.
Each rank scores its share of the questions; the records of all ranks are gathered, so every rank
logs the same numbers and each question counts once.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from dsvl.data.bad_samples import SkipCounter
from dsvl.errors import ConfigError
from dsvl.eval.benchmarks import BenchmarkSpec, Record, run_benchmark, summarize

log = logging.getLogger(__name__)


def gather(records: list[Record], skips: SkipCounter, world_size: int) -> tuple[list[Record], SkipCounter]:
    """Every rank's records and skip counts, on every rank (a no-op in one process)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return records, skips
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, (records, skips.as_dict()))
    return [r for part, _ in parts for r in part], SkipCounter.merged(counts for _, counts in parts)


class BenchmarkValidation(Callback):
    """Runs the configured benchmarks at the end of every validation (not in the sanity check).

    `benchmarks` maps a name to a `BenchmarkSpec` entry, checked when the callback is built (before any
    weights load). The rows are read once (keep `limit` small: their images stay in memory);
    `reports` keeps the latest full report of each benchmark.
    """

    def __init__(self, benchmarks: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self.specs = [BenchmarkSpec.from_config(name, dict(node)) for name, node in (benchmarks or {}).items() if node]
        self.reports: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, list[Any]] = {}  # each benchmark's rows, read at the first validation

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Sharded weights (FSDP, DeepSpeed) gather in every forward, so ranks must run the same number of
        forwards; ranks scoring different shares of questions would hang. Refuse them up front."""
        strategy = trainer.strategy
        replicated = isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)) and "DeepSpeed" not in type(strategy).__name__
        if self.specs and trainer.world_size > 1 and not replicated:
            raise ConfigError(f"val_benchmarks run with DDP or on one device, not with {type(strategy).__name__}; "
                              "use trainer=ddp or evaluate the checkpoints with dsvl-eval")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.specs or trainer.sanity_checking:
            return
        dm = trainer.datamodule
        with torch.no_grad():
            for spec in self.specs:
                rows = self._rows.setdefault(spec.name, list(spec.questions()))
                records, skips = run_benchmark(pl_module.model, dm.encoder.text.tokenizer, spec, dm.system_prompt,
                                               trainer.global_rank, trainer.world_size, rows)
                records, skips = gather(records, skips, trainer.world_size)
                report = self.reports[spec.name] = summarize(records, skips.as_dict())
                metric = "ppl" if spec.reader == "text_ppl" else "accuracy"
                value = report["perplexity"] if metric == "ppl" else report["accuracy"]
                # identical on every rank already: no sync_dist
                pl_module.log(f"val/bench/{spec.name}/{metric}", float(value), batch_size=1)
                pl_module.log(f"val/bench/{spec.name}/num_samples", float(report["num_samples"]), batch_size=1)
                log.info("val/bench/%s: %s=%.4f over %d questions (%s)", spec.name, metric, value, report["num_samples"],
                         skips.summary())
