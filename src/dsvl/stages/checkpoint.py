"""Weights in and out of stage checkpoints, always through `torch.load(weights_only=True)`.

`load_init_weights` (`init_from`) starts a new stage from the previous stage's weights (a `.ckpt`, a sharded `.ckpt`
directory of `trainer=fsdp`, or an exported directory) in a model built whole; optimizer, scheduler and data position
are deliberately not carried over: a new stage is a new run (a meta build reads them into its shards instead:
`dsvl.stages.strategies.defer_weights`). `read_checkpoint` + `copy_weights` serve `dsvl.cli.models.load_stage_checkpoint`,
which rebuilds a `.ckpt`'s model from its saved hyperparameters.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsvl.errors import CheckpointError
from dsvl.model.lora import ADAPTER_ONLY_KEY
from dsvl.model.safe_load import (SHARDED_MODEL, UnsafeCheckpointError, check_checkpoint, deepspeed_files,
                                  is_sharded_checkpoint, load_sharded, safe_torch_load, sharded_tensors)

log = logging.getLogger(__name__)


class InitFromError(CheckpointError):
    """`init_from` points at something that cannot give this model its weights (one-line message)."""


INIT_FROM_ACCEPTED = "accepted: a .ckpt file (a directory under trainer=fsdp) or an exported model directory"


def check_init_from(path: str | Path) -> Path:
    """The path, checked to exist and to be a `.ckpt` file or a sharded `.ckpt` directory holding model weights
    (opened the safe way, tensors not read) or an exported model directory, before any weights are built."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InitFromError(f"init_from={path}: no such file or directory ({INIT_FROM_ACCEPTED})")
    if deepspeed_files(p):  # flat per-rank optimizer partitions: not a weight source
        raise InitFromError(f"init_from={path}: a DeepSpeed checkpoint directory; gather its weights into one file first "
                            "with lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict("
                            f"'{path}', 'weights.ckpt') and use init_from=weights.ckpt")
    if p.is_dir() and not is_sharded_checkpoint(p):
        if (p / "config.json").is_file():
            return p  # an exported (save_pretrained) model: transformers reads it
        raise InitFromError(f"init_from={path}: a directory without config.json is not a model ({INIT_FROM_ACCEPTED})")
    if p.is_file() and p.suffix not in (".ckpt", ".pt", ".pth"):
        raise InitFromError(f"init_from={path}: not a checkpoint (expected .ckpt, .pt or .pth; {INIT_FROM_ACCEPTED})")
    try:
        check_checkpoint(p)
    except CheckpointError as err:
        raise InitFromError(f"init_from={path}: {err}") from None
    if is_sharded_checkpoint(p) and not _sharded_weights(p):
        raise InitFromError(f"init_from={path}: a sharded checkpoint without model weights (no keys under {SHARDED_MODEL}model.)")
    return p


def _sharded_weights(path: Path) -> dict[str, Any]:
    """Index entries (shape, dtype) of the model weights of a sharded checkpoint, by `.ckpt` key (`model.<name>`)."""
    return {k[len(SHARDED_MODEL):]: v for k, v in sharded_tensors(path, f"{SHARDED_MODEL}model.").items()}


def read_sharded_checkpoint(path: str | Path) -> dict[str, Any]:
    """A sharded checkpoint as the dict of a `.ckpt` file (`meta.pt` plus `state_dict`): its model weights read whole
    through DCP, whatever world size wrote them (no process group needed); its optimizer state is not read."""
    path = Path(path)
    ckpt = check_checkpoint(path)
    state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype) for k, v in _sharded_weights(path).items()}
    load_sharded(path, {SHARDED_MODEL + k: t for k, t in state.items()})
    return {**ckpt, "state_dict": state}


def _load(path: Path) -> dict[str, Any]:
    try:
        if is_sharded_checkpoint(path):
            return read_sharded_checkpoint(path)
        ckpt = safe_torch_load(path, map_location="cpu")  # weights_only: a pickle needing code execution is refused
    except UnsafeCheckpointError as err:
        raise InitFromError(f"init_from={path}: {err}") from None
    if not isinstance(ckpt, dict):
        raise InitFromError(f"init_from={path}: not a checkpoint dict")
    return ckpt


def copy_weights(model: nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    """The checkpoint's model weights (keys under `model.`) into `model`. All parameters must match (stages share
    one architecture); rebuilt buffers (rotary caches) may be absent, and so may every frozen base weight of a LoRA
    run's adapter-only checkpoint (they came with `model.pretrained`)."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise InitFromError(f"init_from={path}: no state_dict inside")
    if any(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that differ: saved from another model config
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).strip()[:200])
        raise InitFromError(f"init_from={path}: weights do not match this model ({detail}); "
                            "stages must use the same model config") from None
    param_names = set() if ckpt.get(ADAPTER_ONLY_KEY) else {n for n, _ in model.named_parameters()}
    missing_params = [k for k in missing if k in param_names]
    if missing_params or unexpected:
        detail = ", ".join((missing_params + list(unexpected))[:4])
        raise InitFromError(
            f"init_from={path}: weights do not match this model ({len(missing_params)} missing, {len(unexpected)} unexpected: {detail}); "
            "stages must use the same model config"
        )
    log.info("initialised weights from %s (%d tensors)", path, len(state))


def load_init_weights(model: nn.Module, path: str | Path) -> None:
    """Copy weights from `path` (a `.ckpt` file or directory, or an exported directory) into `model`."""
    p = check_init_from(path)
    if p.is_dir() and not is_sharded_checkpoint(p):
        from dsvl.model import VisionLanguageModel

        copy_weights(model, {"state_dict": VisionLanguageModel.from_pretrained(str(p)).state_dict()}, p)
    else:
        copy_weights(model, _load(p), p)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A `.ckpt` file or sharded directory checked and read the safe way (its `hyper_parameters` are the stage's
    saved ones: empty for checkpoints written before stages saved them)."""
    return _load(check_init_from(path))

