"""Run under `torchrun --nproc_per_node 2`: `finetune/lora` on a tiny released-like checkpoint with
trainer=ddp or trainer=fsdp (CPU, gloo), through the real run path."""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", choices=["ddp", "fsdp"], required=True)
    p.add_argument("--pretrained", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from dsvl.cli._config import compose
    from dsvl.cli.train import train

    cfg = compose(["experiment=finetune/lora", f"model.pretrained={args.pretrained}", "data=demo_sft",
                   f"paths.data_dir={args.data}", f"trainer={args.strategy}", "trainer.accelerator=cpu", "trainer.devices=2",
                   "trainer.precision=32-true", "trainer.max_steps=2", "+trainer.enable_progress_bar=false",
                   "stage.global_batch=4", "data.micro_batch_size=2", "data.max_length=128", "data.num_workers=0",
                   "model.gradient_checkpointing=false", "model.lora.r=4", "scheduler.warmup_steps=1", "logger=csv",
                   "validate_at_end=false", "mc_val.shards=null",
                   f"export_dir={args.out}/export" if args.strategy == "ddp" else "export_dir=null"], output_dir=args.out)
    train(cfg)


if __name__ == "__main__":
    main()
