"""Test helper: records what every micro-batch of a run was (modality, sample keys, loss) and, under
torch.distributed, gathers the records of all ranks into `<default_root_dir>/record.json` on rank 0."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist


class StepRecorder(pl.Callback):
    """One row per micro-batch: global step, micro-batch index, modality, keys, (unscaled) loss."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.rows.append({"micro": batch_idx, "step": batch_idx // trainer.accumulate_grad_batches,
                          "modality": batch["modality"], "keys": list(batch["keys"]),
                          # Lightning hands back the loss divided by the accumulation factor
                          "loss": float(loss) * trainer.accumulate_grad_batches})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ranks = [self.rows]
        if dist.is_available() and dist.is_initialized():
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, self.rows)
        if trainer.global_rank == 0:
            frozen = {}
            module = pl_module.model
            params = {id(p): n for n, p in module.named_parameters()}
            opt = trainer.optimizers[0]
            in_opt = {params[id(p)] for g in opt.param_groups for p in g["params"] if id(p) in params}
            with_state = {params[id(p)] for p in opt.state if id(p) in params and opt.state[p]}
            for n, p in module.named_parameters():
                frozen[n] = {"requires_grad": p.requires_grad, "grad": p.grad is not None,
                             "in_optimizer": n in in_opt, "optimizer_state": n in with_state,
                             "sharded": type(p.data).__name__ == "DTensor" or type(p).__name__ == "DTensor"}
            out = {"world_size": trainer.world_size, "strategy": type(trainer.strategy).__name__, "ranks": ranks,
                   "checkpointing": bool(getattr(module, "is_gradient_checkpointing", False)),
                   "params": frozen}
            Path(trainer.default_root_dir, "record.json").write_text(json.dumps(out))


class WeightDump(pl.Callback):
    """At the start of training, each rank saves the part of every model tensor it holds: `{name: (offset, local)}`
    (offset: where the local part starts in the full tensor; a whole tensor has offset 0s) to `path` (`{rank}` filled)."""

    def __init__(self, path: str) -> None:
        self.path = str(path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch
        from torch.distributed.tensor import DTensor
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        parts = {}
        for name, t in pl_module.model.state_dict().items():
            if isinstance(t, DTensor):
                _, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
                t = t.to_local()
            else:
                offset = (0,) * t.dim()
            parts[name] = (tuple(int(o) for o in offset), t.detach().clone())
        torch.save(parts, self.path.format(rank=trainer.global_rank))
