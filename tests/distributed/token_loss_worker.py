"""Test helper run under `torchrun --nproc_per_node 2` (gloo, CPU): one global step of a stage-2
`PretrainStage` over 2 ranks x 3 accumulated micro-batches whose supervised-token counts differ
widely, with SGD(lr=1) so the applied update is the gradient. Rank 0 writes, as JSON, the largest
difference between that update and the gradient of the single concatenated batch (computed here on
a copy of the same initial weights) and both losses."""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch

ACCUMULATE, VOCAB = 3, 1000
# supervised tokens per micro-batch (rank, index): 1 .. 60, so a per-micro-batch mean would weigh them very differently
SUPERVISED = [[2, 60, 9], [35, 1, 20]]


def micro_batch(rank: int, i: int) -> dict:
    """Two right-padded text rows; the last `SUPERVISED[rank][i]` positions of the pair carry labels."""
    g = torch.Generator().manual_seed(100 * rank + i)
    lengths = [int(x) for x in torch.randint(32, 48, (2,), generator=g)]
    T = max(lengths)
    ids = torch.zeros(2, T, dtype=torch.long)
    labels = torch.full((2, T), -100, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    want = SUPERVISED[rank][i]
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[r, :n] = 1
        k = want // 2 if r == 0 else want - want // 2  # at most 30 < n
        labels[r, n - k:n] = ids[r, n - k:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "modality": "text"}


def concatenated(batches: list[dict]) -> dict:
    T = max(b["input_ids"].shape[1] for b in batches)

    def cat(key: str, fill: int) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(b[key], (0, T - b[key].shape[1]), value=fill) for b in batches])

    return {"input_ids": cat("input_ids", 0), "attention_mask": cat("attention_mask", 0), "labels": cat("labels", -100)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from dsvl.cli.models import build_model
    from dsvl.cli.presets import model_config
    from dsvl.stages.pretrain import PretrainStage

    cfg = model_config("tiny")

    def fresh():
        torch.manual_seed(0)
        return build_model(cfg)

    stage = PretrainStage(fresh(), optimizer=partial(torch.optim.SGD, lr=1.0), trainable=["llm"])
    before = {n: p.detach().clone() for n, p in stage.model.named_parameters() if p.requires_grad}
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", accumulate_grad_batches=ACCUMULATE, max_steps=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, num_sanity_val_steps=0, limit_val_batches=0)
    rank = trainer.global_rank
    loader = DataLoader([micro_batch(rank, i) for i in range(ACCUMULATE)], batch_size=None)
    trainer.fit(stage, train_dataloaders=loader)
    if rank != 0:
        return
    logged = float(trainer.callback_metrics["train/loss"])
    ref_model = fresh().train()
    for n, p in ref_model.named_parameters():
        p.requires_grad_(n in before)
    big = concatenated([micro_batch(r, i) for r in range(2) for i in range(ACCUMULATE)])
    out = ref_model(**big)
    out.loss.backward()
    ref = dict(ref_model.named_parameters())
    after = dict(stage.model.named_parameters())
    diff = max(float((before[n] - after[n].detach() - ref[n].grad).abs().max()) for n in before)
    scale = max(float(ref[n].grad.abs().max()) for n in before)
    # what the mean of per-micro-batch means would have given (to show the test can fail)
    means = []
    for r in range(2):
        for i in range(ACCUMULATE):
            m = fresh().train()
            means.append(float(m(**micro_batch(r, i)).loss))
    Path(args.out).write_text(json.dumps({"max_grad_diff": diff, "grad_scale": scale, "logged_loss": logged,
                                          "batch_loss": float(out.loss), "tokens": int(out.num_loss_tokens),
                                          "mean_of_means": sum(means) / len(means)}))


if __name__ == "__main__":
    main()
