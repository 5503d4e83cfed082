"""Test helper run under `torchrun --nproc_per_node 2`: one dsvl stage-2 run through the real run path
(`dsvl.cli.train.train`) with trainer=ddp or trainer=fsdp on CPU (gloo), recording every micro-batch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def overrides(strategy: str, data_dir: str, steps: int, devices: int, global_batch: int, micro: int) -> list[str]:
    """The stage-2 demo recipe on a small schedule with both modalities from step 0."""
    trainer = {"ddp": "ddp", "fsdp": "fsdp", "single": "cpu"}[strategy]
    # FSDP2 with activation checkpointing on: recomputation must not change a single loss
    extra = ["model.gradient_checkpointing=true"] if strategy == "fsdp" else []
    return extra + [
        "experiment=demo/pretrain", f"trainer={trainer}", "trainer.accelerator=cpu", f"trainer.devices={devices}",
        "trainer.precision=32-true", f"trainer.max_steps={steps}", "+trainer.enable_progress_bar=false",
        f"stage.global_batch={global_batch}", f"data.micro_batch_size={micro}", f"paths.data_dir={data_dir}",
        "data.schedule={start: 0.5, target: 0.5, warmup_steps: 0, shape: linear}", "data.max_length=96",
        "scheduler.warmup_steps=1", "logger=none", "callbacks=none", "validate_at_end=false", "seed=7",
        "data.packing_buffer=8",  # a short look-ahead: 4 steps stay inside each rank's part of one epoch
    ]


def compose_run(strategy: str, data_dir: str, out: str, steps: int, devices: int, global_batch: int, micro: int):
    from omegaconf import open_dict

    from dsvl.cli._config import compose

    cfg = compose(overrides(strategy, data_dir, steps, devices, global_batch, micro), output_dir=out)
    with open_dict(cfg):
        cfg.callbacks = {"record": {"_target_": "dist_recorder.StepRecorder"},
                         "model_checkpoint": {"_target_": "dsvl.callbacks.RunCheckpoint", "dirpath": f"{out}/checkpoints",
                                              "save_last": True, "save_top_k": 0}}
    return cfg


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", choices=["ddp", "fsdp"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from dsvl.cli.train import train

    train(compose_run(args.strategy, args.data, args.out, args.steps, devices=2, global_batch=4, micro=2))


if __name__ == "__main__":
    main()
