"""Run under `torchrun --nproc_per_node 2`: one step of the stage-2 demo recipe with DDP on CPU (gloo)
and `val_benchmarks`; each rank writes what it logged at validation to <out>/rank<r>.json."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))


class BenchRecorder(Callback):
    """Writes the metrics each rank holds after validation, and the benchmark callback's reports."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from dsvl.callbacks.benchmarks import BenchmarkValidation

        bench = next(c for c in trainer.callbacks if isinstance(c, BenchmarkValidation))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/bench/")}
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "metrics": metrics, "reports": bench.reports}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--benchmarks", required=True, help="JSON: the val_benchmarks entries")
    args = p.parse_args()
    import torch
    from omegaconf import open_dict

    from dist_worker import overrides
    from dsvl.cli._config import compose
    from dsvl.cli.train import train

    torch.set_num_threads(1)
    extra = ["validate_at_end=true", "limit_val_batches=1", "mc_val=null"]
    cfg = compose(overrides("ddp", args.data, 1, devices=2, global_batch=4, micro=2) + extra, output_dir=args.out)
    with open_dict(cfg):
        cfg.val_benchmarks = json.loads(args.benchmarks)
        cfg.callbacks = {"benchmarks": {"_target_": "dsvl.callbacks.benchmarks.BenchmarkValidation", "benchmarks": "${val_benchmarks}"},
                         "record": {"_target_": "bench_ddp_worker.BenchRecorder", "out": args.out}}
    train(cfg)


if __name__ == "__main__":
    main()
