"""Run one stage from a composed config: check it, build model / data / stage / trainer, fit.

`dsvl-train` (a thin Hydra entry), `dsvl-pipeline` and `dsvl-demo` all call `run_stage`. The
config is checked (`plan_run`) before any weights are created, so a bad key costs a second and
gives one line, not a traceback after minutes of loading.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dsvl.errors import ConfigError

log = logging.getLogger(__name__)


class TrainConfigError(ConfigError):
    """A training config that cannot run; the message is one line naming the keys."""


@dataclass
class RunPlan:
    """What the config implies, computed without weights."""

    world_size: int
    micro_batch: int
    global_batch: int
    accumulation: int
    max_steps: int
    val_check_interval: int | None
    trainable: list[str]


@dataclass
class StageResult:
    """What a finished stage hands to the next one (and to the demo's summary)."""

    stage: str
    output_dir: Path
    checkpoint: Path | None
    steps: int
    seconds: float
    final_loss: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    export_dir: Path | None = None
    trainable: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- checks
def world_size(trainer_cfg: Any) -> int:
    """Devices x nodes from the trainer config ("auto"/-1 count the visible accelerators)."""
    devices = trainer_cfg.get("devices", 1)
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        n = len(devices)
    elif str(devices) in ("auto", "-1"):
        gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        n = torch.cuda.device_count() if gpu else 1
        if str(devices) == "auto" and not gpu:
            n = 1
    else:
        try:
            n = int(devices)
        except ValueError:
            n = len([d for d in str(devices).split(",") if d.strip()])
    return max(n, 1) * max(nodes, 1)


def micro_batch_size(cfg: DictConfig) -> int:
    """Samples per device per forward (the data config's batch size)."""
    for key in ("micro_batch_size", "batch_size"):
        value = cfg.data.get(key)
        if value is not None:
            return int(value)
    raise TrainConfigError("data.micro_batch_size is not set (samples per device per micro-batch)")


def plan_run(cfg: DictConfig) -> RunPlan:
    """Check the config and derive accumulation; raises TrainConfigError / ConfigError (one line)."""
    from dsvl.model import vision_spec
    from dsvl.stages.checkpoint import check_init_from
    from dsvl.stages.freezing import expand_part_names

    for key in ("model", "data", "stage", "trainer"):
        if cfg.get(key) is None:
            raise TrainConfigError(f"config has no '{key}' group (choose one, e.g. {key}=...)")
    spec = vision_spec(cfg.model)  # raises dsvl.model.ConfigError for parts that do not fit
    parts = ["adaptor", "llm"]
    if spec.input("pixel_values") is not None:
        parts.insert(0, "vision.low")
    if spec.input("high_res_pixel_values") is not None:
        parts.insert(1 if "vision.low" in parts else 0, "vision.high")
    trainable = cfg.stage.get("trainable")
    trainable = expand_part_names(list(trainable), parts) if trainable is not None else None

    from dsvl.stages.strategies import check_strategy

    check_strategy(cfg.trainer)  # e.g. trainer=deepspeed without the package: one line, before any weights
    world = world_size(cfg.trainer)
    micro = micro_batch_size(cfg)
    global_batch = cfg.stage.get("global_batch")
    if global_batch is None:
        global_batch = micro * world
    global_batch = int(global_batch)
    if micro <= 0 or global_batch <= 0:
        raise TrainConfigError(f"stage.global_batch ({global_batch}) and data.micro_batch_size ({micro}) must be positive")
    if global_batch % (micro * world):
        raise TrainConfigError(
            f"stage.global_batch={global_batch} is not divisible by data.micro_batch_size={micro} x world size {world} "
            "(trainer.devices x trainer.num_nodes)"
        )
    accumulation = global_batch // (micro * world)
    set_accum = cfg.trainer.get("accumulate_grad_batches")
    if set_accum is not None and int(set_accum) != accumulation:
        raise TrainConfigError(
            f"trainer.accumulate_grad_batches={set_accum} contradicts stage.global_batch={global_batch} / "
            f"(data.micro_batch_size={micro} x world size {world}) = {accumulation}; remove it, it is derived"
        )
    max_steps = int(cfg.trainer.get("max_steps", -1) or -1)
    if max_steps <= 0:
        raise TrainConfigError(f"trainer.max_steps must be > 0 (training is counted in global steps), got {max_steps}")
    sched = cfg.get("scheduler")
    if sched is not None and sched.get("warmup_steps") is not None and int(sched.warmup_steps) > max_steps:
        raise TrainConfigError(f"scheduler.warmup_steps={sched.warmup_steps} exceeds trainer.max_steps={max_steps} (accepted: 0 to {max_steps})")
    val_every = cfg.get("val_every_n_steps")
    val_check = int(val_every) * accumulation if val_every else None
    for key in ("init_from", "ckpt_path"):
        if cfg.get(key):
            if key == "init_from":
                check_init_from(cfg.init_from)
            elif not Path(cfg.ckpt_path).is_file():
                raise TrainConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if cfg.get("init_from") and cfg.get("ckpt_path"):
        raise TrainConfigError("set init_from (start a new stage from weights) or ckpt_path (resume this stage), not both")
    return RunPlan(world, micro, global_batch, accumulation, max_steps, val_check, trainable or [])


# ---------------------------------------------------------------------------------------- builders
def _accepts(target: Any, name: str) -> bool:
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def instantiate_group(node: Any, what: str) -> list[Any]:
    """Instantiate every `_target_` entry of a dict-of-configs group (loggers, callbacks)."""
    from hydra.utils import instantiate

    out: list[Any] = []
    if not node:
        return out
    for name, conf in node.items():
        if conf is None or not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        if what == "logger" and str(conf._target_).endswith("WandbLogger") and conf.get("offline") is None:
            conf = OmegaConf.merge(conf, {"offline": wandb_offline()})
        try:
            out.append(instantiate(conf, _convert_="all"))
        except Exception as err:
            cause = err.__cause__ or err
            if isinstance(cause, ModuleNotFoundError) and what == "logger":
                missing = " ".join(str(cause).split())
                raise TrainConfigError(f"logger.{name} needs a package that is not installed ({missing}); pip install it or choose another logger") from None
            raise
    return out


def wandb_offline() -> bool:
    """Offline unless an API key is set (or WANDB_MODE says otherwise): runs never need an account."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    return not os.environ.get("WANDB_API_KEY")


def build_datamodule(cfg: DictConfig, plan: RunPlan, stage_cls: type) -> Any:
    """The data config instantiated with what only the run knows: the model's vision spec (no
    weights needed), what the stage's labels supervise, accumulation and seed (unless the data
    config sets them)."""
    from hydra.utils import get_class, instantiate

    from dsvl.model import vision_spec

    target = get_class(cfg.data._target_)
    offered = {
        "vision_spec": vision_spec(cfg.model),
        "supervise": stage_cls.supervise,
        "accumulate_grad_batches": plan.accumulation,
        "seed": int(cfg.get("seed", 0)),
        "mc_val": OmegaConf.to_container(cfg.mc_val, resolve=True) if cfg.get("mc_val") is not None else None,
    }
    extra = {k: v for k, v in offered.items() if cfg.data.get(k) is None and _accepts(target, k)}
    supervise = cfg.data.get("supervise")
    if supervise is not None and supervise != stage_cls.supervise:
        log.warning("data.supervise=%s differs from the %s stage's default (%s)", supervise, stage_cls.__name__, stage_cls.supervise)
    return instantiate(cfg.data, _convert_="all", **extra)


def data_tokenizer(datamodule: Any) -> Any | None:
    """The transformers tokenizer the datamodule encodes with (None when it has none)."""
    text = getattr(getattr(datamodule, "encoder", None), "text", None)
    return getattr(text, "tokenizer", None) or getattr(datamodule, "tokenizer", None)


def align_model_to_data(cfg: DictConfig, datamodule: Any) -> None:
    """The model's image token id is the tokenizer's; its vocabulary must cover the tokenizer."""
    token_id = getattr(datamodule, "image_token_id", None)
    if token_id is not None and cfg.model.get("image_token_id") != token_id:
        log.info("model.image_token_id set to the tokenizer's image token id %s", token_id)
        cfg.model.image_token_id = int(token_id)
    tokenizer = data_tokenizer(datamodule)
    vocab = cfg.model.get("llm", {}).get("vocab_size") if cfg.model.get("llm") is not None else None
    if tokenizer is not None and vocab is not None and len(tokenizer) > int(vocab):
        raise TrainConfigError(f"model.llm.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> Path:
    """`config_resolved.yaml` in the run dir (Hydra's `.hydra/config.yaml` keeps the unresolved one);
    `dsvl-eval` rebuilds the model of a checkpoint from it."""
    path = output_dir / "config_resolved.yaml"
    OmegaConf.save(cfg, path, resolve=True)
    return path


def log_hyperparameters(loggers: list[Any], cfg: DictConfig, plan: RunPlan) -> None:
    """The resolved config (plus derived values) to every logger."""
    params = OmegaConf.to_container(cfg, resolve=True)
    params["derived"] = {"world_size": plan.world_size, "accumulate_grad_batches": plan.accumulation,
                         "micro_batch": plan.micro_batch, "global_batch": plan.global_batch}
    for lg in loggers:
        lg.log_hyperparams(params)


def close_loggers() -> None:
    """Finish an open W&B run (also after a crash, so a multirun's next job starts clean)."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            crashed = sys.exc_info()[0] is not None
            wandb.finish(exit_code=1 if crashed else 0)
            log.info("closed the W&B run%s", " of a crashed job" if crashed else "")


# ---------------------------------------------------------------------------------------- run
def run_stage(cfg: DictConfig, plan: RunPlan | None = None) -> StageResult:
    """Train one stage as configured; returns its checkpoint, timing and final metrics."""
    import lightning.pytorch as pl
    from hydra.utils import get_class, instantiate

    from dsvl.callbacks.preemption import was_preempted
    from dsvl.model import build_model
    from dsvl.stages.checkpoint import load_init_weights

    plan = plan or plan_run(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    if cfg.get("torch_threads"):  # small models on shared CPUs: fewer threads, no oversubscription
        torch.set_num_threads(int(cfg.torch_threads))

    stage_cls = get_class(cfg.stage._target_)
    datamodule = build_datamodule(cfg, plan, stage_cls)
    align_model_to_data(cfg, datamodule)
    save_resolved_config(cfg, output_dir)  # after the model takes the tokenizer's image token id
    # loggers and callbacks before any weights: a missing logger package fails in a second
    loggers = instantiate_group(cfg.get("logger"), "logger")
    callbacks = instantiate_group(cfg.get("callbacks"), "callback")
    model = build_model(cfg.model)
    if cfg.get("init_from"):
        load_init_weights(model, cfg.init_from)
    optimizer = instantiate(cfg.optim, _convert_="all") if cfg.get("optim") else None
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None
    stage = instantiate(cfg.stage, model=model, optimizer=optimizer, scheduler=scheduler, _convert_="all")

    if cfg.trainer.get("enable_progress_bar") is False:  # Lightning refuses a bar callback then
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer_kwargs: dict[str, Any] = {"accumulate_grad_batches": plan.accumulation, "check_val_every_n_epoch": None}
    if plan.val_check_interval is None:  # no validation during fit; validate_at_end runs it once after
        trainer_kwargs |= {"limit_val_batches": 0, "val_check_interval": plan.max_steps * plan.accumulation + 1}
    else:
        trainer_kwargs["val_check_interval"] = plan.val_check_interval
        if cfg.get("limit_val_batches") is not None:
            trainer_kwargs["limit_val_batches"] = cfg.limit_val_batches
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, _convert_="all", **trainer_kwargs)
    log_hyperparameters(loggers, cfg, plan)

    start = time.perf_counter()
    trainer.fit(stage, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path") or None, weights_only=True)
    seconds = time.perf_counter() - start
    ckpt_dir = Path(cfg.paths.get("ckpt_dir") or output_dir / "checkpoints")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = ckpt_dir / "last.ckpt"
    preempted = was_preempted(trainer)  # PreemptionCheckpoint wrote last.ckpt where it stopped; exit fast
    if not preempted:
        trainer.save_checkpoint(checkpoint, weights_only=False)  # full state: optimizer, scheduler, data position

    validated_last_step = plan.val_check_interval is not None and (plan.max_steps * plan.accumulation) % plan.val_check_interval == 0
    if cfg.get("validate_at_end", True) and not preempted and not validated_last_step:
        limit = cfg.get("limit_val_batches")
        trainer.limit_val_batches = 1.0 if limit is None else limit
        trainer.validate(stage, datamodule=datamodule, verbose=False, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    export = None
    if cfg.get("export_dir") and not preempted:
        export = export_model(stage.model, datamodule, Path(cfg.export_dir))
    for lg in loggers:
        lg.finalize("success")
    return StageResult(
        stage=stage.stage_name, output_dir=output_dir, checkpoint=checkpoint, steps=int(trainer.global_step),
        seconds=seconds, final_loss={k: float(v) for k, v in getattr(stage, "final_loss", {}).items()}, metrics=metrics, export_dir=export,
        trainable=list(stage.trainable_parts), frozen=list(stage.frozen_parts),
    )


def export_model(model: Any, datamodule: Any, out: Path) -> Path:
    """`save_pretrained` of the model plus the tokenizer files: a transformers-loadable directory."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer = data_tokenizer(datamodule)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(out))
    log.info("exported model to %s", out)
    return out


def value_of(metrics: dict[str, float], name: str | None) -> float:
    """A metric for a sweep's objective (nan when the run did not produce it)."""
    if not name:
        return float("nan")
    value = metrics.get(name)
    return float(value) if value is not None and math.isfinite(float(value)) else float("nan")
