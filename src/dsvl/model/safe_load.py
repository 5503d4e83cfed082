"""Loading checkpoints without running code from them (docs/reliability.md, "Safe loading"): safetensors, or
`torch.load(weights_only=True)`; a pickle naming any other global is refused with `UnsafeCheckpointError` before
that global is imported. There is deliberately no switch to turn this off. A sharded (DCP) checkpoint's `.metadata`
index, which DCP's own reader unpickles unrestricted, is read by an unpickler that knows only DCP's metadata classes."""
from __future__ import annotations

import io
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dsvl.errors import CheckpointError

_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)")


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that cannot be loaded without executing pickle code (or is not a checkpoint at all)."""


def _offending_global(err: BaseException) -> str | None:
    match = _GLOBAL.search(str(err))
    return match.group(1) if match else None


def safe_torch_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`; a pickle that needs code execution raises `UnsafeCheckpointError`."""
    p = Path(path)
    try:
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        name = _offending_global(err)
        if name is None and "Unsupported operand" in str(err):
            raise UnsafeCheckpointError(f"cannot load {p}: not a torch checkpoint (unsupported pickle data)") from None
        what = f"it calls {name}, which only pickle code execution could run" if name else "it needs pickle code execution"
        raise UnsafeCheckpointError(f"refusing to load {p}: {what}; dsvl loads checkpoints with torch.load(weights_only=True) "
                                    "only (re-save it as a plain state dict or safetensors from a trusted environment)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        if mmap and "mmap" in str(err):  # legacy (non-zip) format cannot be mapped: read it instead
            return safe_torch_load(p, map_location=map_location, mmap=False)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(f"cannot load {p}: not a readable checkpoint ({first})") from None


SHARDED_META = "meta.pt"  # what Lightning's FSDP2 strategy keeps outside the tensors of a sharded checkpoint
SHARDED_INDEX = ".metadata"  # DCP's index of a sharded checkpoint: every key's shape, dtype and chunks
SHARDED_MODEL = "state_dict."  # the model weights' keys (Lightning saves `{"state_dict": ..., "optimizer_0": ...}`)


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A `torch.distributed.checkpoint` directory, as `trainer=fsdp` writes `last.ckpt` and every `.ckpt`."""
    return Path(path).is_dir() and (Path(path) / SHARDED_INDEX).is_file()


def deepspeed_files(path: str | Path) -> list[Path]:
    """The per-rank files of a DeepSpeed checkpoint directory (what Lightning's `DeepSpeedStrategy` writes as a `.ckpt`:
    `latest` names the folder of `*model_states.pt` and `*optim_states.pt`), model states first; [] for anything else."""
    p = Path(path)
    if not (p / "latest").is_file():
        return []
    tag = p / (p / "latest").read_text().strip()
    models = sorted(tag.glob("*model_states.pt"))
    return [*models, *sorted(tag.glob("*optim_states.pt"))] if models else []


def is_checkpoint(path: str | Path) -> bool:
    """A checkpoint file, a sharded (DCP) or a DeepSpeed checkpoint directory."""
    return Path(path).is_file() or is_sharded_checkpoint(path) or bool(deepspeed_files(path))


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """The top-level dict of a checkpoint opened the safe way (tensors memory-mapped, not read) before a run commits
    to it: of a sharded checkpoint its index and `meta.pt` (what Lightning unpickles); of a DeepSpeed one every
    per-rank file (DeepSpeed's resume unpickles them unrestricted), returning the first: Lightning's state."""
    if files := deepspeed_files(path):
        try:  # data-only classes its optimizer states name: an IntEnum and the loss scalers (numbers in __dict__)
            from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
            from deepspeed.runtime.zero.config import ZeroStageEnum
        except ImportError:
            raise UnsafeCheckpointError(f"{path} is a DeepSpeed checkpoint: reading it needs deepspeed "
                                        "(pip install deepspeed)") from None
        with torch.serialization.safe_globals([ZeroStageEnum, LossScaler, DynamicLossScaler]):
            return [safe_torch_load(f, mmap=True) for f in files][0]
    if is_sharded_checkpoint(path):
        read_sharded_metadata(path)  # Lightning's resume would unpickle it without restrictions
        path = Path(path) / SHARDED_META
    ckpt = safe_torch_load(path, map_location="cpu", mmap=True)
    if not isinstance(ckpt, dict):
        raise UnsafeCheckpointError(f"cannot load {path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


_DCP_METADATA = "torch.distributed.checkpoint.metadata"
# everything a DCP index pickles: its metadata dataclasses, torch.Size / dtypes / layouts, the checkpoint's path
_INDEX_GLOBALS = {
    (_DCP_METADATA, n) for n in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
                                 "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"), ("torch.serialization", "_get_layout"),
     ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
     ("collections", "OrderedDict")}


class _IndexUnpickler(pickle.Unpickler):
    """Rebuilds DCP metadata only: any other global is refused before it is imported."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _INDEX_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unsupported GLOBAL {module}.{name}")


def read_sharded_metadata(path: str | Path) -> Any:
    """The `torch.distributed.checkpoint.metadata.Metadata` of a sharded checkpoint directory, unpickled the safe way;
    raises `UnsafeCheckpointError` (one line) for an index that names other globals or is not a DCP index."""
    index = Path(path) / SHARDED_INDEX
    try:
        metadata = _IndexUnpickler(io.BytesIO(index.read_bytes())).load()
    except pickle.UnpicklingError as err:
        name = _offending_global(err)
        if name is None:
            raise UnsafeCheckpointError(f"cannot load {index}: not a torch.distributed.checkpoint index ({err})") from None
        raise UnsafeCheckpointError(f"refusing to load {index}: it calls {name}, which only pickle code execution could run; "
                                    "a sharded checkpoint's index holds torch.distributed.checkpoint metadata only") from None
    except (EOFError, OSError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise UnsafeCheckpointError(f"cannot load {index}: not a torch.distributed.checkpoint index "
                                    f"({type(err).__name__}: {str(err)[:80]})") from None
    from torch.distributed.checkpoint.metadata import Metadata

    if not isinstance(metadata, Metadata):
        raise UnsafeCheckpointError(f"cannot load {index}: not a torch.distributed.checkpoint index "
                                    f"(found {type(metadata).__name__})")
    return metadata


def sharded_tensors(path: str | Path, prefix: str = SHARDED_MODEL) -> dict[str, Any]:
    """Key -> `TensorStorageMetadata` (global `size`, `properties.dtype`) of the tensors under `prefix` (prefix kept)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    return {k: v for k, v in read_sharded_metadata(path).state_dict_metadata.items()
            if k.startswith(prefix) and isinstance(v, TensorStorageMetadata)}


def load_sharded(path: str | Path, targets: Mapping[str, torch.Tensor]) -> None:
    """Read the tensors `targets` names (checkpoint keys, e.g. `state_dict.model.llm.lm_head.weight`) from a sharded
    checkpoint into them, in place, whatever world size wrote it: into a DTensor only its local slices (collective:
    every rank of its mesh calls this), into a plain tensor all of it (no process group needed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import CheckpointException, FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.tensor import DTensor

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata = read_sharded_metadata(path)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    distributed = any(isinstance(t, DTensor) for t in targets.values())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        try:
            dcp.load(dict(targets), storage_reader=Reader(str(path)), no_dist=not distributed)
        except CheckpointException as err:  # a missing or truncated shard file, gathered from every rank
            failure = next(iter(err.failures.values()), (err, None))[0]  # (exception, traceback) per failed rank
            first = next(iter(str(failure).strip().splitlines()), "")
            raise UnsafeCheckpointError(f"cannot load {path}: a shard is unreadable ({type(failure).__name__}: {first[:160]})") from None
