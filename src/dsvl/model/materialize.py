"""Weights for a meta-built model, one piece at a time, into whole or sharded (FSDP2 DTensor) parameters, so no
process holds the full model unless it runs it whole (docs/scale.md, docs/architecture.md). Random init goes per
*init unit* (a transformer block, a block-free subtree, a block container's own tensors): a full CPU copy of the unit
gets its owner's init under a generator seeded by (seed, unit name) and each parameter keeps its local part, so any
number of ranks starts from exactly the weights of the same model built whole with the same seed."""
from __future__ import annotations

import copy
import ctypes
import json
import logging
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsvl.errors import CheckpointError

from .safe_load import is_sharded_checkpoint, load_sharded, safe_torch_load, sharded_tensors

log = logging.getLogger(__name__)


def has_meta_parameters(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _tensors(module: nn.Module, recurse: bool) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters(recurse=recurse, remove_duplicate=False)
    yield from module.named_buffers(recurse=recurse, remove_duplicate=False)


def _units(module: nn.Module, prefix: str, blocks: tuple[type, ...]) -> Iterator[tuple[str, nn.Module, bool]]:
    """(name, module, whole subtree?) covering every tensor once; a block or a block-free subtree is one unit."""
    holds_blocks = any(isinstance(m, blocks) for m in module.modules()) if blocks else False
    if isinstance(module, blocks) or not holds_blocks:
        if any(True for _ in _tensors(module, True)):
            yield prefix, module, True
        return
    if any(True for _ in _tensors(module, False)):
        yield prefix, module, False
    for name, child in module.named_children():
        yield from _units(child, f"{prefix}{name}.", blocks)


def _unit_values(name: str, unit: nn.Module, whole: bool, owners: dict[str, nn.Module | None], seed: int,
                 skip: set[str] | frozenset[str]) -> dict[str, torch.Tensor]:
    """Full-size CPU values of a unit's tensors not in `skip`, from its owners' init under the unit's own seed
    (nothing is built for a unit wholly in `skip`)."""
    if {f"{name}{n}" for n, _ in _tensors(unit, whole)} <= skip:
        return {}
    work = copy.deepcopy(unit).to_empty(device="cpu", recurse=whole)
    with torch.no_grad():
        for _, t in _tensors(work, whole):
            t.__dict__.pop("_is_hf_initialized", None)  # transformers' init skips tensors it thinks are loaded
            t.fill_(float("nan") if t.is_floating_point() else torch.iinfo(t.dtype).min)  # "not written", checked below
    modules = list(work.named_modules(remove_duplicate=False)) if whole else [("", work)]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(zlib.crc32(f"{int(seed)}:{name}".encode()))  # a function of the run seed and unit name only
        for rel, module in reversed(modules):  # children before parents, as transformers' smart_apply
            owner = owners[f"{name}{rel}".rstrip(".")]
            if owner is not None:
                owner._init_weights(module)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()
    values = {f"{name}{n}": t.detach() for n, t in _tensors(work, whole)}
    unset = [n for n, v in values.items()
             if bool((v.isnan() if v.is_floating_point() else v == torch.iinfo(v.dtype).min).any())]
    if unset:
        raise RuntimeError(f"no init rule reaches {unset[:3]} (give its module reset_parameters or an owner with _init_weights)")
    return {n: v for n, v in values.items() if n not in skip}


def _check_shape(what: str, got: Any, want: Any) -> None:
    if tuple(got) != tuple(want):
        raise CheckpointError(f"{what}: shape {tuple(got)} where the model holds {tuple(want)} "
                              "(the checkpoint was not saved from this model config)")


def _assign(target: torch.Tensor, value: Any, what: str) -> None:
    """Copy `value` (a full tensor or anything indexable like one) into the local part of `target`."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local, index = target, None
    if isinstance(target, DTensor):  # only its slice of the full tensor is read
        shape, offset = compute_local_shape_and_global_offset(target.shape, target.device_mesh, target.placements)
        local, index = target.to_local(), tuple(slice(o, o + s) for o, s in zip(offset, shape))
    part = value[index] if index is not None else value[:] if not isinstance(value, torch.Tensor) else value
    _check_shape(what, part.shape, local.shape)
    with torch.no_grad():
        local.copy_(part)


@dataclass(frozen=True)
class WeightSource:
    """Weights to load after random init: `path` (safetensors file or directory, a weights-only torch / Lightning
    checkpoint, a sharded one) into the parameters under `prefix`. `key_map`: (checkpoint prefix, model prefix under
    `prefix`) renames; `strip`: a key prefix dropped first (Lightning's "model."); `exact`: every checkpoint key under
    `strip` must be in the model (`init_from`); `origin`: the config key that asked for it, which starts its errors."""

    path: str
    prefix: str = ""
    key_map: tuple[tuple[str, str], ...] = ()
    strip: str = ""
    exact: bool = False
    origin: str = ""

    @property
    def label(self) -> str:
        return f"{self.origin}={self.path}" if self.origin else self.path

    def rename(self, key: str) -> str | None:
        if self.strip:
            if not key.startswith(self.strip):
                return None
            key = key[len(self.strip):]
        for src, dst in self.key_map:
            if key.startswith(src):
                return self.prefix + dst + key[len(src):]
        return None if self.key_map else self.prefix + key


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.exists():
        return [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no .safetensors files to load weights from")
    return files


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}


class _SafetensorsRows:
    """One tensor of a safetensors file, read by rows with plain file reads: a row range is one contiguous byte
    range, read into fresh memory (a memory map would leave every page read counted in the process' RSS)."""

    def __init__(self, path: Path, start: int, info: Mapping[str, Any]) -> None:
        self.path, self.dtype, self.shape = path, _SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"])
        self.start, self.end = start + info["data_offsets"][0], start + info["data_offsets"][1]

    def __getitem__(self, index: tuple[slice, ...] | slice) -> torch.Tensor:
        index = index if isinstance(index, tuple) else (index,)
        if any((s.start or 0) != 0 or (s.stop is not None and s.stop != n) for s, n in zip(index[1:], self.shape[1:])):
            raise NotImplementedError("only row ranges are read (FSDP2 shards dim 0)")
        rows = range(*index[0].indices(self.shape[0])) if self.shape else range(0)
        row_bytes = (self.end - self.start) // max(self.shape[0], 1) if self.shape else self.end - self.start
        first, count = (rows.start, len(rows)) if self.shape else (0, 1)
        out = torch.empty((count, *self.shape[1:]) if self.shape else (), dtype=self.dtype)
        with open(self.path, "rb") as f:
            f.seek(self.start + first * row_bytes)
            f.readinto(memoryview(out.view(-1).view(torch.uint8).numpy()))
        return out


def _safetensors_index(path: Path) -> dict[str, _SafetensorsRows]:
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {k: _SafetensorsRows(path, 8 + size, info) for k, info in header.items()}


@contextmanager
def _open_tensors(path: Path) -> Iterator[Mapping[str, Any]]:
    """Checkpoint key -> something sliceable like a tensor that reads only the slice asked for; of a sharded
    checkpoint, its index entries (`_read` reads those through DCP, all at once)."""
    if is_sharded_checkpoint(path):
        yield sharded_tensors(path)
        return
    if path.is_dir() or path.suffix == ".safetensors":
        yield {k: v for f in _safetensors_files(path) for k, v in _safetensors_index(f).items()}
        return
    ckpt = safe_torch_load(path, map_location="cpu", mmap=True)  # mapped: only the slices read reach memory
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no state_dict of tensors inside")
    yield state


@contextmanager
def _blamed(source: WeightSource) -> Iterator[None]:
    """A `CheckpointError` reading `source` starts with the config key that asked for it (`init_from=<path>: ...`)."""
    try:
        yield
    except CheckpointError as err:
        if not source.origin or str(err).startswith(source.label):
            raise
        raise type(err)(f"{source.label}: {err}") from None


def _picked(source: WeightSource, tensors: Mapping[str, Any], model: nn.Module) -> dict[str, str]:
    """Checkpoint key -> state-dict name of what `source` fills in `model` (on meta or not); every parameter under
    `source.prefix` must be among them."""
    targets = model.state_dict(keep_vars=True)
    names = {key: source.rename(key) for key in tensors}
    unexpected = sorted(k for k, n in names.items() if n is not None and n not in targets) if source.exact else []
    if unexpected:
        raise CheckpointError(f"{source.label}: {len(unexpected)} checkpoint tensors are not in this model, e.g. "
                              f"{unexpected[:3]} (stages must use the same model config)")
    picked = {key: name for key, name in names.items() if name in targets}
    wanted = {n for n, _ in model.named_parameters() if n.startswith(source.prefix)}
    missing = sorted(wanted - set(picked.values()))
    if missing:
        raise CheckpointError(f"{source.label}: {len(missing)} weights of this model are not in the checkpoint, "
                              f"e.g. {missing[:3]} (stages must use the same model config)")
    return picked


def _read(source: WeightSource, tensors: Mapping[str, Any], picked: Mapping[str, str],
          targets: Mapping[str, torch.Tensor]) -> None:
    """Copy the `picked` checkpoint tensors into (the local parts of) `targets`."""
    path = Path(source.path).expanduser()
    if is_sharded_checkpoint(path):  # DCP reads every rank's slices in one collective call
        for key, name in picked.items():
            _check_shape(f"{source.label}: {key}", tensors[key].size, targets[name].shape)
        load_sharded(path, {key: targets[name] for key, name in picked.items()})
        return
    for key, name in picked.items():
        _assign(targets[name], tensors[key], f"{source.label}: {key}")


def _open_sources(stack: ExitStack, sources: Any, model: nn.Module
                  ) -> list[tuple[WeightSource, Mapping[str, Any], dict[str, str]]]:
    """Each source opened in `stack` (no tensor read yet), with what it fills in `model` (`_picked`)."""
    opened = []
    for source in sources:
        with _blamed(source):
            tensors = stack.enter_context(_open_tensors(Path(source.path).expanduser()))
            opened.append((source, tensors, _picked(source, tensors, model)))
    return opened


def init_random(
    model: nn.Module,
    template: nn.Module | None = None,
    seed: int | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Random init per unit (the blocks are `template.block_classes()`) into `model`'s allocated (local parts of)
    tensors except those in `skip` (a unit wholly in `skip` is never built). `template`: the same model unsharded
    (default `model`); `seed`: default `torch.initial_seed()` (`seed_everything` sets it)."""
    template = model if template is None else template
    seed, units, owners = _init_plan(template, seed)
    targets = dict(_tensors(model, True))
    for name, unit, whole in units:
        for pname, value in _unit_values(name, unit, whole, owners, seed, skip).items():
            _assign(targets[pname], value, pname)


def _init_plan(template: nn.Module, seed: int | None
               ) -> tuple[int, list[tuple[str, nn.Module, bool]], dict[str, nn.Module | None]]:
    """The run seed, the init units of `template` and, by module name, the module whose `_init_weights` initialises
    it: the nearest ancestor-or-self that has one (defaults as `init_random`)."""
    seed = torch.initial_seed() if seed is None else int(seed)
    blocks = tuple(template.block_classes()) if hasattr(template, "block_classes") else ()
    owners: dict[str, nn.Module | None] = {}
    for name, module in template.named_modules():
        parent = owners.get(name.rpartition(".")[0]) if name else None
        owners[name] = module if hasattr(module, "_init_weights") else parent
    return seed, list(_units(template, "", blocks)), owners


def materialize(
    model: nn.Module,
    template: nn.Module | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    sources: tuple[WeightSource, ...] | list[WeightSource] = (),
) -> nn.Module:
    """Allocate `model`'s parameters on `device` (its local shards once `fully_shard` was applied) and fill them:
    random init (`init_random`) of every tensor that `sources` do not hold, then each of `sources` in order (every
    parameter under a source's `prefix` must be in it). `template`: the model unsharded on meta (default: a copy)."""
    if template is None:
        template = copy.deepcopy(model)
    first: dict[int, str] = {}
    tied = [(n, first.setdefault(id(p), n)) for n, p in model.named_parameters(remove_duplicate=False)]
    model.to_empty(device=device or "cpu")
    for name, same in tied:  # to_empty makes new parameters off meta: tie them again (e.g. tied embeddings)
        if name != same:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, model.get_parameter(same))
    with ExitStack() as stack:
        opened = _open_sources(stack, sources, model)
        init_random(model, template, seed, skip={n for *_, picked in opened for n in picked.values()})
        targets = model.state_dict(keep_vars=True)
        for source, tensors, picked in opened:
            with _blamed(source):
                _read(source, tensors, picked, targets)
            log.info("loaded %d tensors from %s%s", len(picked), source.path, f" into {source.prefix}" if source.prefix else "")
    return model


def materialize_in_units(
    model: nn.Module,
    partition: Callable[[list[nn.Parameter]], None],
    device: torch.device | str | None = None,
    seed: int | None = None,
    sources: tuple[WeightSource, ...] | list[WeightSource] = (),
) -> nn.Module:
    """`materialize` for a model partitioned as it is filled (DeepSpeed ZeRO-3): one init unit at a time is allocated
    whole on `device`, filled as `materialize` would, and its parameters handed to `partition` (which keeps this rank's
    part); a parameter tied to a later unit (tied embeddings) goes with that unit. A rank holds about one unit."""
    template = copy.deepcopy(model)  # on meta: cheap
    seed, units, owners = _init_plan(template, seed)
    meta = dict(_tensors(model, True))
    names = [[f"{name}{n}" for n, _ in _tensors(unit, whole)] for name, unit, whole in units]
    last = {id(meta[n]): i for i, unit_names in enumerate(names) for n in unit_names}
    real: dict[int, torch.Tensor] = {}  # meta tensor -> the allocated one
    with ExitStack() as stack:
        opened = _open_sources(stack, sources, model)
        filled = {id(meta[n]) for *_, picked in opened for n in picked.values()}
        skip = {n for n, t in meta.items() if id(t) in filled}  # a tied tensor a source fills is filled under every name
        # a safetensors tensor (the last source holding it) is read into its own memory and kept, not read then copied
        direct = {n: (j, key) for j, (_, tensors, picked) in enumerate(opened) for key, n in picked.items()
                  if isinstance(tensors[key], _SafetensorsRows)}
        adopted: set[tuple[int, str]] = set()
        for i, ((name, unit, whole), unit_names) in enumerate(zip(units, names)):
            values = _unit_values(name, unit, whole, owners, seed, skip)
            for n in unit_names:
                t = meta[n]
                if id(t) not in real:  # the init's or the file's own tensor where there is one: no second copy
                    if n in values:
                        data = values.pop(n).to(device or "cpu")
                    elif n in direct:
                        j, key = direct[n]
                        rows = opened[j][1][key]
                        _check_shape(f"{opened[j][0].label}: {key}", rows.shape, t.shape)
                        data = rows[:].to(t.dtype).to(device or "cpu")
                        adopted.add((j, key))
                    else:
                        data = torch.empty_like(t, device=device or "cpu")
                    real[id(t)] = nn.Parameter(data, t.requires_grad) if isinstance(t, nn.Parameter) else data
                parent, _, attr = n.rpartition(".")
                setattr(model.get_submodule(parent), attr, real[id(t)])
            targets = {n: real[id(meta[n])] for n in unit_names}
            for n, value in values.items():  # tied to an earlier unit's tensor: the last unit's init wins, as in `materialize`
                _assign(targets[n], value, n)
            for j, (source, tensors, picked) in enumerate(opened):
                mine = {key: n for key, n in picked.items() if n in targets and (j, key) not in adopted}
                if mine:  # the same on every rank: a sharded (DCP) source reads collectively
                    with _blamed(source):
                        _read(source, tensors, mine, targets)
            done = {id(meta[n]): real[id(meta[n])] for n in unit_names
                    if isinstance(meta[n], nn.Parameter) and last[id(meta[n])] == i}
            if done:
                partition(list(done.values()))
            # Give the memory this unit freed back to the OS. glibc keeps freed blocks under its mmap threshold in the
            # heap and raises that threshold each time a big tensor is freed, so without this a rank's RSS grew to about
            # the whole model's (measured: 1.3B fp32 load on 2 ranks, 7.7 GB per rank, 5.3 GB with a fixed threshold).
            with suppress(OSError):  # not glibc (macOS, musl): nothing to trim
                ctypes.CDLL("libc.so.6").malloc_trim(0)
    return model
