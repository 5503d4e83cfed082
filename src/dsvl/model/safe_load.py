"""Loading checkpoints without running code from them (DESIGN.md principle 6; a checkpoint is never a way in).

Every checkpoint dsvl reads goes through here: `.safetensors` files with safetensors, everything
else (Lightning `.ckpt`, `.pt`, `.bin`) with `torch.load(weights_only=True)`, whose unpickler
only rebuilds tensors and plain containers. A file whose pickle names any other global (a class
to construct, `os.system`, ...) is refused with `UnsafeCheckpointError` before that global is
ever imported or called. There is deliberately no switch to turn this off.
"""
from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from dsvl.errors import CheckpointError

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)")
_OPERAND = re.compile(r"Unsupported operand")


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that cannot be loaded without executing pickle code (or is not a checkpoint at all)."""


def _offending_global(err: BaseException) -> str | None:
    match = _GLOBAL.search(str(err))
    return match.group(1) if match else None


def safe_torch_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`; a pickle that needs code execution raises `UnsafeCheckpointError`.

    `mmap=True` maps tensor storages instead of reading them (cheap checks of big checkpoints).
    """
    p = Path(path)
    try:
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        name = _offending_global(err)
        if name is None and _OPERAND.search(str(err)):
            raise UnsafeCheckpointError(f"cannot load {p}: not a torch checkpoint (unsupported pickle data)") from None
        what = f"it calls {name}, which only pickle code execution could run" if name else "it needs pickle code execution"
        raise UnsafeCheckpointError(
            f"refusing to load {p}: {what}; dsvl loads checkpoints with torch.load(weights_only=True) only "
            "(re-save it as a plain state dict or safetensors from a trusted environment)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        if mmap and "mmap" in str(err):  # legacy (non-zip) format cannot be mapped: read it instead
            return safe_torch_load(p, map_location=map_location, mmap=False)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(f"cannot load {p}: not a readable checkpoint ({first})") from None


def load_weights(path: str | Path, map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """A flat tensor dict from a `.safetensors` file or a weights-only torch file."""
    p = Path(path)
    if p.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(p), device=str(map_location))
    state = safe_torch_load(p, map_location=map_location)
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"cannot load {p}: expected a dict of tensors, found {type(state).__name__}")
    return state


SHARDED_META = "meta.pt"  # what Lightning's FSDP2 strategy keeps outside the tensors of a sharded checkpoint


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A `torch.distributed.checkpoint` directory, as `trainer=fsdp` writes `last.ckpt` and every `.ckpt`."""
    return Path(path).is_dir() and (Path(path) / ".metadata").is_file()


def is_checkpoint(path: str | Path) -> bool:
    """A checkpoint file or a sharded checkpoint directory."""
    return Path(path).is_file() or is_sharded_checkpoint(path)


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Open a checkpoint the safe way (tensors memory-mapped, not read) before a run commits to it; of a
    sharded checkpoint, its non-tensor state (`meta.pt`: loop, data and callback states), the part
    Lightning unpickles (the tensors are read by torch.distributed.checkpoint).

    Returns the top-level dict without its tensor payloads being read; raises `UnsafeCheckpointError`.
    """
    if is_sharded_checkpoint(path):
        path = Path(path) / SHARDED_META
    ckpt = safe_torch_load(path, map_location="cpu", mmap=True)
    if not isinstance(ckpt, dict):
        raise UnsafeCheckpointError(f"cannot load {path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt
