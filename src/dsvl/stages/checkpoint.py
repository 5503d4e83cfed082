"""`init_from`: start a stage from the previous stage's weights (weights only, safe loading).

Accepts a Lightning `.ckpt` (its `state_dict`, keys under `model.`) or an exported directory
(`save_pretrained`, loaded by `VisionLanguageModel.from_pretrained`). Optimizer, scheduler and
data position are deliberately not carried over: a new stage is a new run (use `ckpt_path=` to
resume the same stage).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from dsvl.errors import CheckpointError
from dsvl.model.safe_load import UnsafeCheckpointError, safe_torch_load

log = logging.getLogger(__name__)


class InitFromError(CheckpointError):
    """`init_from` points at something that cannot give this model its weights (one-line message)."""


def check_init_from(path: str | Path) -> Path:
    """The path, checked to exist and to be a `.ckpt` file or a directory (before any weights load)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InitFromError(f"init_from={path}: no such file or directory")
    if p.is_file() and p.suffix not in (".ckpt", ".pt", ".pth"):
        raise InitFromError(f"init_from={path}: expected a Lightning .ckpt file or an exported model directory")
    return p


def lightning_state_dict(path: Path, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The model weights of a Lightning checkpoint, loaded with `weights_only=True`."""
    try:
        ckpt = safe_torch_load(path, map_location="cpu")  # weights_only: a pickle needing code execution is refused
    except UnsafeCheckpointError as err:
        raise InitFromError(f"init_from={path}: {err}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise InitFromError(f"init_from={path}: no state_dict inside")
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_init_weights(model: nn.Module, path: str | Path) -> None:
    """Copy weights from `path` into `model` (all parts must match: stages share one architecture)."""
    p = check_init_from(path)
    if p.is_dir():
        from dsvl.model import VisionLanguageModel

        state = VisionLanguageModel.from_pretrained(str(p)).state_dict()
    else:
        state = lightning_state_dict(p)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # buffers that are recomputed at build time (e.g. rotary caches) may be absent; parameters may not
    param_names = {n for n, _ in model.named_parameters()}
    missing_params = [k for k in missing if k in param_names]
    if missing_params or unexpected:
        detail = ", ".join((missing_params + list(unexpected))[:4])
        raise InitFromError(
            f"init_from={path}: weights do not match this model ({len(missing_params)} missing, {len(unexpected)} unexpected: {detail}); "
            "stages must use the same model config"
        )
    log.info("initialised weights from %s (%d tensors)", p, len(state))
