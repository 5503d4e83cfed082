"""Test helper: a sharded checkpoint in the layout Lightning's FSDP2 strategy (`ModelParallelStrategy`) writes, made in
one process: the tensors through `torch.distributed.checkpoint` (`{"state_dict": {"model.<name>": ...}, "optimizer_0":
...}`, keys flattened by DCP), everything else in `meta.pt`."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def save_sharded(path: Path, model_state: dict[str, torch.Tensor], meta: dict[str, Any] | None = None,
                 optimizer: dict[str, Any] | None = None) -> Path:
    import torch.distributed.checkpoint as dcp

    state: dict[str, Any] = {"state_dict": {f"model.{k}": v for k, v in model_state.items()}}
    if optimizer is not None:
        state["optimizer_0"] = optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group: assuming a single process", as intended
        dcp.save(state, checkpoint_id=path, no_dist=True)
    torch.save(meta if meta is not None else {"global_step": 3, "loops": {}}, path / "meta.pt")
    return path
