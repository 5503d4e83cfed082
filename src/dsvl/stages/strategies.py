"""How the VLM is cut under Lightning's own strategies (docs/scale.md): FSDP2 sharding per component, the
meta build materialised per shard (FSDP2) or per partitioned unit (DeepSpeed ZeRO-3), strategy checks before any
weights, SLURM requeue. `configure_model(stage)` is what `VLMStage.configure_model` calls.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from dsvl.model import WeightSource, materialize, weight_sources
from dsvl.model.materialize import has_meta_parameters, materialize_in_units
from dsvl.model.safe_load import SHARDED_MODEL, is_sharded_checkpoint

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,  # config names
                                  "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


class FSDP2Strategy(ModelParallelStrategy):
    """`ModelParallelStrategy` for pure FSDP2: a data-parallel mesh over all ranks, tensor parallel 1 (use
    `ModelParallelStrategy` itself for 2-D parallelism). `reshard_after_forward=False` keeps gathered weights until
    backward (ZeRO-2 like); `param_dtype` / `reduce_dtype` ("bf16", "fp32", ...) make FSDP2's `MixedPrecisionPolicy`
    (None keeps the parameters' dtype). Activation checkpointing is `model.gradient_checkpointing=true`."""

    def __init__(self, reshard_after_forward: bool = True, param_dtype: str | None = None, reduce_dtype: str | None = None,
                 **kwargs: Any) -> None:  # the rest are `ModelParallelStrategy`'s (data_parallel_size, timeout, ...)
        super().__init__(tensor_parallel_size=1, **kwargs)
        self.reshard_after_forward = bool(reshard_after_forward)
        unknown = {param_dtype, reduce_dtype} - {None, *DTYPES}
        if unknown:
            raise ValueError(f"unknown dtype {unknown.pop()!r}; accepted: {', '.join(DTYPES)}")
        self.param_dtype, self.reduce_dtype = DTYPES.get(param_dtype), DTYPES.get(reduce_dtype)

    def setup_environment(self) -> None:
        # Lightning's "auto" is one data-parallel group per node (for 2-D meshes); FSDP2 alone shards over all ranks
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


def shard_model(model: nn.Module, **fully_shard_kwargs: Any) -> dict[str, int]:
    """`fully_shard` each block of each part (`model.block_classes()`), then each part, then `model`; returns the
    blocks sharded per part."""
    from torch.distributed.fsdp import fully_shard

    blocks = tuple(model.block_classes())
    counts: dict[str, int] = {}
    for name, part in model.parts().items():
        n = 0
        for module in part.modules():
            if blocks and isinstance(module, blocks):
                fully_shard(module, **fully_shard_kwargs)
                n += 1
        counts[name] = n
        if not any(True for _ in part.parameters()):
            continue
        get_in = getattr(part, "get_input_embeddings", None)
        if get_in is None:
            fully_shard(part, **fully_shard_kwargs)
            continue
        # the VLM embeds tokens itself (image features are scattered into them) before calling the LLM,
        # so the input embedding must gather on its own call: its own unit. Tied to the output head,
        # both stay in the root unit (gathered by the VLM's forward) instead.
        emb, head = get_in(), part.get_output_embeddings()
        if head is not None and head.weight is emb.weight:
            continue
        fully_shard(emb, **fully_shard_kwargs)
        fully_shard(part, **fully_shard_kwargs)
    fully_shard(model, **fully_shard_kwargs)
    return counts


def is_sharded(module: nn.Module) -> bool:
    """True once `fully_shard` has been applied to `module`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def builds_on_meta(strategy: Any) -> bool:
    """True for FSDP2 (`ModelParallelStrategy`) and DeepSpeed ZeRO-3, where the run path builds the model on meta and
    materialises it per shard; other strategies (and a `model.lora` config, see `build_model`) build it whole."""
    return isinstance(strategy, ModelParallelStrategy) or is_zero3(strategy)


def is_zero3(strategy: Any) -> bool:
    """True for Lightning's `DeepSpeedStrategy` at ZeRO stage 3 (parameters partitioned over the ranks)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3


def zero3_partitioner(config: Mapping[str, Any]) -> Callable[[list[nn.Parameter]], None]:
    """A function that hands whole parameters to DeepSpeed ZeRO-3 (`config`: the strategy's DeepSpeed config), which
    keeps this rank's partition of each (in the dtype its config trains in) and frees the rest: what
    `deepspeed.zero.Init` does to each module built inside it, here for one unit of `materialize_in_units` at a time."""
    import deepspeed

    init = deepspeed.zero.Init(config_dict_or_path=dict(config))  # not entered: patches nothing, only partitions

    def partition(params: list[nn.Parameter]) -> None:
        for p in params:
            if p.is_floating_point():
                p.data = p.data.to(init.dtype)
        init._convert_to_zero_parameters(params)  # what DeepSpeed's own `param.convert_to_zero_parameters` calls

    return partition


def materialize_zero3(model: nn.Module, config: Mapping[str, Any], device: torch.device | str | None = None,
                      sources: list[WeightSource] | tuple[WeightSource, ...] = (), seed: int | None = None) -> nn.Module:
    """Fill a meta-built model unit by unit, each unit partitioned by DeepSpeed ZeRO-3 (`config`: the strategy's
    DeepSpeed config) as soon as it is filled (`materialize_in_units`). Lightning calls `configure_model` inside
    `deepspeed.zero.Init`, whose tensor constructors make every floating tensor in the training dtype on the device
    (a rotary `inv_freq` computed in bf16): they are lifted meanwhile, as `deepspeed.initialize` does, so the init is
    the whole build's (fp32, on the host) and only the partitions are cast."""
    from deepspeed.runtime.zero.partition_parameters import restore_init_context, shutdown_init_context

    shutdown_init_context()
    try:
        return materialize_in_units(model, zero3_partitioner(config), device=device, seed=seed, sources=sources)
    finally:
        restore_init_context()


def checkpoint_source(path: str | Path) -> WeightSource:
    """A `WeightSource` for `init_from`: a Lightning `.ckpt` / weights-only torch file (keys under `model.`), a sharded
    `.ckpt` directory of `trainer=fsdp` (DCP, keys under `state_dict.model.`), a `.safetensors` file of dsvl keys, or
    an exported transformers DeepSeek-VL directory (`save_pretrained`)."""
    from dsvl.model.hf_keys import key_map

    p = Path(path).expanduser()
    if is_sharded_checkpoint(p):
        return WeightSource(str(p), strip=f"{SHARDED_MODEL}model.", exact=True, origin="init_from")
    if p.is_dir():
        arch = json.loads((p / "config.json").read_text())["model_type"]
        return WeightSource(str(p), key_map=tuple(key_map(arch)), origin="init_from")
    return WeightSource(str(p), strip="model." if p.suffix != ".safetensors" else "", exact=p.suffix != ".safetensors",
                        origin="init_from")


def defer_weights(model: nn.Module, init_from: str | Path) -> None:
    """Record on a meta-built model a checkpoint that `configure_model` loads into its shards (after the
    pretrained weights the model config asks for): `init_from` under FSDP2. A model built whole (`model.lora`)
    loads it now, as under DDP."""
    if not has_meta_parameters(model):
        from dsvl.stages.checkpoint import load_init_weights

        load_init_weights(model, init_from)
        return
    model.deferred_weights = [*getattr(model, "deferred_weights", []), checkpoint_source(init_from)]


def configure_model(stage: Any) -> None:
    """The strategy's parallelism on `stage.model`: FSDP2 shards it, then fills a meta build per shard; ZeRO-3 fills a
    meta build unit by unit, partitioned. Otherwise a no-op (DDP and DeepSpeed wrap the module themselves);
    idempotent (Lightning calls it again for `validate`)."""
    strategy = getattr(stage._trainer, "strategy", None)
    model = stage.model
    on_meta = has_meta_parameters(model)
    sources = [*weight_sources(model), *getattr(model, "deferred_weights", [])] if on_meta else []
    if is_zero3(strategy) and on_meta:
        materialize_zero3(model, strategy.config, device=strategy.root_device, sources=sources)
        log.info("DeepSpeed ZeRO-3 over %d ranks: built on meta, materialised and partitioned unit by unit", strategy.world_size)
        return
    if not isinstance(strategy, ModelParallelStrategy) or is_sharded(model):
        return
    template = copy.deepcopy(model) if on_meta else None  # unsharded, still on meta: cheap
    opts: dict[str, Any] = {"mesh": strategy.device_mesh["data_parallel"]}
    if isinstance(strategy, FSDP2Strategy):
        from torch.distributed.fsdp import MixedPrecisionPolicy

        opts |= {"reshard_after_forward": strategy.reshard_after_forward,
                 "mp_policy": MixedPrecisionPolicy(param_dtype=strategy.param_dtype, reduce_dtype=strategy.reduce_dtype)}
    counts = shard_model(model, **opts)
    if template is not None:
        materialize(model, template, device=strategy.root_device, sources=sources)
    frozen = set(getattr(stage, "frozen_parts", ()))
    log.info("FSDP2 over %d ranks%s: %s", strategy.world_size, " (built on meta, materialised per shard)" if template else "",
             ", ".join(f"{p} ({n} blocks, {'frozen' if p in frozen else 'trained'})" for p, n in counts.items()))


# ---------------------------------------------------------------------------------------- checks
def check_strategy(trainer_cfg: Mapping[str, Any]) -> None:
    """One-line errors for strategies that cannot run here (before any weights are built)."""
    from dsvl.errors import ConfigError

    strategy = trainer_cfg.get("strategy", "auto")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, Mapping) else str(strategy)
    if "deepspeed" not in target.lower():
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("trainer=deepspeed needs the deepspeed package (pip install deepspeed, on a CUDA machine); "
                          "or use trainer=fsdp, Lightning's FSDP2, which needs nothing extra")
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        raise ConfigError("trainer=deepspeed runs on GPUs only; on CPU use trainer=ddp or trainer=fsdp with trainer.accelerator=cpu")


def slurm_environment(auto_requeue: bool = True, requeue_signal: str = "SIGUSR1") -> SLURMEnvironment:
    """`SLURMEnvironment` with the requeue signal given by name (YAML cannot name a `signal.Signals`); on it
    (sbatch `--signal=USR1@<s>`) Lightning saves `hpc_ckpt_<n>.ckpt`, requeues the job and the job resumes from it."""
    return SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=signal.Signals[requeue_signal])
