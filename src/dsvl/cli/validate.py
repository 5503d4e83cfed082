"""`validate_config`: every value of a composed config, before any weights load, so a typo costs seconds
and one line (exit 2): types and ranges from the schemas (`dsvl.cli.schema`), then what needs several keys
or the file system. Model-shape checks and the world-size arithmetic need the model's and the Trainer's own
code and run right after (`dsvl.cli.train.check_run`, `accumulation`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from dsvl.cli._config import check_targets, one_line
from dsvl.cli.schema import check_schema
from dsvl.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)


def plain(node: Any) -> Any:
    """The config as plain dicts / lists with interpolations resolved, for the schemas. Outside a Hydra app the
    run dir `${hydra:runtime.output_dir}` cannot resolve: such values stay as written. Any other value that does
    not resolve, or a mandatory `???` left unset, is the user's to fix (one line)."""
    if isinstance(node, DictConfig):
        return {k: plain(_resolved(node, k)) for k in node.keys() if k != "hydra"}
    if isinstance(node, ListConfig):
        return [plain(_resolved(node, i)) for i in range(len(node))]
    return node


def _resolved(node: DictConfig | ListConfig, key: Any) -> Any:
    try:
        return node[key]
    except MissingMandatoryValue:
        full = node._get_full_key(key)
        raise ConfigError(f"{full}: no value (set it: {full}=...)") from None
    except InterpolationResolutionError as err:
        if "HydraConfig was not set" in str(err):
            return node._get_node(key)._value()  # type: ignore[union-attr]
        raise ConfigError(f"{node._get_full_key(key)}: {one_line(err)}") from None


def check_data(data: dict[str, Any], mc_val: dict[str, Any] | None) -> None:
    """What the data schema cannot see: the mode against the sources' modalities, the tokenizer and
    the shard paths."""
    from hydra.utils import get_object

    from dsvl.data.mixture import parse_sources
    from dsvl.data.streams import expand_urls

    sources = data.get("train_sources") or {}
    modalities = {s.get("modality", "text") for s in (sources.values() if isinstance(sources, dict) else sources) if s}
    need = {"text_only": "text", "multimodal_only": "multimodal"}.get(str(data.get("mode")))
    if need and need not in modalities:
        raise ConfigError(f"data.mode={data['mode']} but data.train_sources has no {need} source "
                             f"(its sources are {', '.join(sorted(modalities)) or 'none'})")
    tokenizer = data.get("tokenizer")
    # a path (absolute, ./, ~, or deeper than a hub id's `org/name`) must exist
    local = isinstance(tokenizer, str) and (tokenizer.startswith(("/", ".", "~")) or tokenizer.count("/") > 1)
    if local and not Path(tokenizer).expanduser().exists():
        raise DataError(f"data.tokenizer={tokenizer}: no such directory (accepted: a tokenizer directory or a hub id)")
    check = getattr(get_object(data["_target_"]), "check_sources", None) if data.get("_target_") else None
    for key in ("train_sources", "val_sources"):  # the datamodule's own check of the shards
        if check is not None:
            check(parse_sources(data.get(key)), f"data.{key}")
    shards = (mc_val or {}).get("shards")
    if shards and not any(Path(u).is_file() for u in expand_urls(shards)):
        raise DataError(f"mc_val.shards={shards}: no shards found (accepted: a folder of .tar shards, a glob, "
                        "a list of shard files, or null to skip)")


def check_steps(cfg: dict[str, Any]) -> None:
    """Step and batch arithmetic that holds on any number of devices."""
    max_steps = (cfg.get("trainer") or {}).get("max_steps")
    sched = cfg.get("scheduler") or {}
    if max_steps and sched.get("warmup_steps") is not None and int(sched["warmup_steps"]) > int(max_steps):
        raise ConfigError(f"scheduler.warmup_steps={sched['warmup_steps']} exceeds trainer.max_steps={max_steps} "
                             f"(accepted: 0 to {max_steps})")
    if len(sched.get("milestones") or []) != len(sched.get("factors") or []):
        raise ConfigError(f"scheduler.milestones={sched['milestones']} and scheduler.factors={sched['factors']} "
                             "need the same length (one lr factor from each milestone on)")
    warmup = ((cfg.get("data") or {}).get("schedule") or {}).get("warmup_steps")
    if max_steps and warmup and int(warmup) > int(max_steps):
        log.warning("data.schedule.warmup_steps=%s > trainer.max_steps=%s: the language ratio never reaches its target",
                    warmup, max_steps)
    val_every = cfg.get("val_every_n_steps")
    if max_steps and val_every and int(val_every) > int(max_steps):
        log.warning("val_every_n_steps=%s > trainer.max_steps=%s: no validation during training", val_every, max_steps)
    micro = (cfg.get("data") or {}).get("micro_batch_size")
    global_batch = (cfg.get("stage") or {}).get("global_batch")
    if micro and global_batch and int(global_batch) % int(micro):
        raise ConfigError(f"stage.global_batch={global_batch} is not divisible by data.micro_batch_size={micro} "
                             "(accepted: a multiple of data.micro_batch_size x trainer.devices x trainer.num_nodes)")


def check_checkpoints(cfg: dict[str, Any]) -> None:
    """`init_from` / `ckpt_path` name loadable checkpoints, opened the safe way (weights-only, memory-mapped)."""
    from dsvl.model.safe_load import check_checkpoint, is_checkpoint
    from dsvl.stages.checkpoint import check_init_from

    init_from, ckpt_path = cfg.get("init_from"), cfg.get("ckpt_path")
    if init_from and ckpt_path:
        raise ConfigError("set init_from (start a new stage from weights) or ckpt_path (resume this stage), not both")
    ckpt_dir = (cfg.get("paths") or {}).get("ckpt_dir")
    if init_from and not (cfg.get("auto_resume") and ckpt_dir and is_checkpoint(Path(str(ckpt_dir)) / "last.ckpt")):
        check_init_from(str(init_from))  # (a restarted job resumes its own progress: the previous stage's weights are not read)
    if ckpt_path and ckpt_path not in ("last", "hpc"):  # those two are found in the run dir, after Hydra made it
        path = Path(str(ckpt_path)).expanduser()
        if not is_checkpoint(path):
            raise CheckpointError(f"ckpt_path={ckpt_path}: no such file or checkpoint directory (accepted: a .ckpt file, "
                                  "a sharded or DeepSpeed .ckpt directory, 'last' or 'hpc')")
        try:
            check_checkpoint(path)
        except CheckpointError as err:
            raise CheckpointError(f"ckpt_path={ckpt_path}: {err}") from None


def validate_config(cfg: DictConfig) -> None:
    """Every value of a train config, before any weights exist; raises a `dsvl.errors.UserError`
    (`ConfigError`, `DataError` or `CheckpointError`) with a one-line message naming the key."""
    from dsvl.stages.freezing import expand_part_names

    values = plain(cfg)
    check_schema(values)
    check_targets(values)  # every `_target_` imports (the model's parts too)
    if (values.get("stage") or {}).get("trainable") is not None:  # names and aliases (this model's parts: check_run)
        expand_part_names(values["stage"]["trainable"])
    check_steps(values)
    if values.get("data"):
        check_data(values["data"], values.get("mc_val"))
    check_checkpoints(values)
