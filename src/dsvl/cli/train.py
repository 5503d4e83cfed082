"""`dsvl-train`: one training stage, read top to bottom in `train(cfg)` (docs/architecture.md, "The run path").

    dsvl-train experiment=demo/align
    dsvl-train experiment=demo/pretrain hydra.run.dir=outputs/my_run auto_resume=true
    dsvl-train -m experiment=demo/align optim.lr=1e-3,3e-3
"""
from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from dsvl.cli._config import hydra_app, instantiate_node
from dsvl.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

# frozen parts are in eval mode by design (VLMStage.train); Lightning warns about any module in eval mode at fit start
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def close_wandb(crashed: bool = False) -> None:
    """Finish an open W&B run (also after a crash, so a multirun's or pipeline's next job starts clean)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if crashed else 0)
            log.info("closed the W&B run%s", " of a crashed job" if crashed else "")


def task_wrapper(fn: Callable[[DictConfig], dict[str, float]]) -> Callable[[DictConfig], dict[str, float]]:
    """Close the loggers on any exit of `fn` (Lightning finalizes its own; W&B needs `finish`)."""

    @functools.wraps(fn)
    def wrap(cfg: DictConfig) -> dict[str, float]:
        try:
            metrics = fn(cfg)
        except BaseException:
            close_wandb(crashed=True)
            raise
        close_wandb()
        return metrics

    return wrap


@task_wrapper
def train(cfg: DictConfig) -> dict[str, float]:
    """Train one stage as configured; returns the final metrics (`trainer/global_step`, `perf/fit_seconds`,
    the last `train/*` and `val/*` values). The checkpoint is `<paths.ckpt_dir>/last.ckpt`."""
    import lightning.pytorch as pl
    import torch
    from hydra.utils import get_class

    from dsvl.callbacks import was_preempted
    from dsvl.cli.validate import validate_config
    from dsvl.cli.models import build_model
    from dsvl.model.export import export_pretrained
    from dsvl.stages.checkpoint import load_init_weights
    from dsvl.stages.strategies import builds_on_meta, check_strategy, defer_weights, is_sharded, is_zero3

    # 1. check: every value before any weights exist; a bad config costs a second and one line
    validate_config(cfg)
    ckpt_path = resume_from(cfg)  # init_from was opened the safe way by validate_config
    stage_cls = get_class(cfg.stage._target_)
    check_run(cfg)
    check_strategy(cfg.trainer)  # e.g. trainer=deepspeed without the package
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    if cfg.get("torch_threads"):  # small models on shared CPUs: fewer threads, no oversubscription
        torch.set_num_threads(int(cfg.torch_threads))

    # 2. instantiate: Trainer first (it knows the world size), then data, then weights
    fill_wandb(cfg, stage_cls.stage_name, output_dir)
    loggers = [instantiate_node(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items() if c]
    callbacks = [instantiate_node(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c]
    if cfg.trainer.get("enable_progress_bar") is False:  # Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    if not loggers:  # logger=none: Lightning's LearningRateMonitor refuses a Trainer without a logger
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate_node(cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks,
                                           check_val_every_n_epoch=None)
    set_accumulation(cfg, trainer)
    datamodule = build_datamodule(cfg, trainer.accumulate_grad_batches, stage_cls.supervise)
    align_model_to_data(cfg, datamodule)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)  # with the tokenizer's image token id
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    on_meta = builds_on_meta(trainer.strategy)  # FSDP2, ZeRO-3: built on meta, materialised per shard / unit in configure_model
    model = build_model(cfg.model, device="meta" if on_meta else None)
    if cfg.get("init_from"):
        (defer_weights if on_meta else load_init_weights)(model, cfg.init_from)
    stage = instantiate_node(cfg.stage, "stage", model=model, model_config=OmegaConf.to_container(cfg.model, resolve=True),
                             tokenizer=tokenizer_dir(datamodule), system_prompt=getattr(datamodule, "system_prompt", None),
                             optimizer=instantiate_node(cfg.optim, "optim") if cfg.get("optim") else None,
                             scheduler=instantiate_node(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
                             _recursive_=False)  # model_config stays a plain dict

    # 3. fit (Lightning restores weights, optimizer, scheduler, data position and callbacks from ckpt_path)
    start = time.perf_counter()
    trainer.fit(stage, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - start
    metrics = scalars(trainer.callback_metrics)  # the last train/* values (validate() replaces callback_metrics)
    preempted = was_preempted(trainer)
    if preempted:
        log.warning("preempted: saved %s at global step %d; rerun the same command with auto_resume=true "
                    "(or ckpt_path=last) to continue", trainer.checkpoint_callback.last_model_path, trainer.global_step)

    # 4. validate (unless fit just did at its last step) and export
    validated = cfg.get("val_every_n_steps") and trainer.max_steps % int(cfg.val_every_n_steps) == 0  # at the last step
    if cfg.get("validate_at_end", True) and not preempted and not validated:
        trainer.limit_val_batches = 1.0 if cfg.get("limit_val_batches") is None else cfg.limit_val_batches
        trainer.validate(stage, datamodule=datamodule, verbose=False, weights_only=True)
    if cfg.get("export_dir") and not preempted and is_sharded(stage.model):
        log.warning("export_dir=%s: the model is sharded (FSDP2); write the export from the sharded checkpoint with "
                    "python tools/consolidate_checkpoint.py %s %s", cfg.export_dir, ckpt_dir(cfg) / "last.ckpt", cfg.export_dir)
    elif cfg.get("export_dir") and not preempted and is_zero3(trainer.strategy):  # no rank holds whole parameters
        log.warning("export_dir=%s: the parameters are partitioned (DeepSpeed ZeRO-3); gather the weights of %s with "
                    "lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict", cfg.export_dir,
                    ckpt_dir(cfg) / "last.ckpt")
    elif cfg.get("export_dir") and not preempted and trainer.is_global_zero:  # transformers' directory, tokenizer, chat template
        path = export_pretrained(stage.model, cfg.export_dir, tokenizer=data_tokenizer(datamodule),
                                 system_prompt=getattr(datamodule, "system_prompt", None))
        log.info("exported model to %s", path)

    return metrics | scalars(trainer.callback_metrics) | {"trainer/global_step": float(trainer.global_step),
                                                          "perf/fit_seconds": seconds}


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The one-element tensors of Lightning's `callback_metrics` as floats."""
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 0)() == 1}


# ---------------------------------------------------------------------------------------- checks
def ckpt_dir(cfg: DictConfig) -> Path:
    """The run's checkpoint folder (`paths.ckpt_dir`, else `<paths.output_dir>/checkpoints`)."""
    return Path(cfg.paths.get("ckpt_dir") or Path(cfg.paths.output_dir) / "checkpoints")


def run_dir_is_fixed() -> bool:
    """False when Hydra made a fresh timestamped run dir (a restarted job would never find its checkpoint)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return True  # no Hydra app: the caller chose the output dir itself
    hc = HydraConfig.get()
    return any(o.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "paths.output_dir=", "paths.ckpt_dir="))
               for o in [*hc.overrides.hydra, *hc.overrides.task])


def resume_from(cfg: DictConfig) -> str | None:
    """The `ckpt_path` handed to `trainer.fit`: None (fresh), a file, "last" or "hpc", every file it may load opened
    the safe way first. `auto_resume=true` means "last" when `<ckpt_dir>/last.ckpt` exists (a restarted job then
    ignores `init_from`: its own progress wins over the previous stage), else a fresh start."""
    from dsvl.model.safe_load import check_checkpoint, is_checkpoint

    requested = cfg.get("ckpt_path")
    last = ckpt_dir(cfg) / "last.ckpt"
    if requested == "hpc":  # SLURM requeue: Lightning's hpc_ckpt_<n>.ckpt in the run dir
        run_dir = Path(cfg.trainer.get("default_root_dir") or cfg.paths.output_dir)
        candidates = sorted(run_dir.glob("hpc_ckpt_*.ckpt"))
        if not candidates:  # Lightning would raise a ValueError with a traceback
            raise CheckpointError(f"ckpt_path=hpc: no hpc_ckpt_<n>.ckpt in {run_dir} (written when SLURM requeues a job); "
                                  "use auto_resume=true to start fresh when there is none")
    elif requested == "last" or (cfg.get("auto_resume") and not requested):
        if requested == "last" and not is_checkpoint(last):
            raise CheckpointError(f"ckpt_path=last: no last.ckpt in {last.parent}; point hydra.run.dir at the run to resume "
                                  "(or use auto_resume=true to start fresh when there is none)")
        if not is_checkpoint(last):
            if not run_dir_is_fixed():
                log.warning("auto_resume=true with a new timestamped run dir (%s): a restarted job will not find this "
                            "run's checkpoints; set hydra.run.dir=outputs/<name>", last.parent.parent)
            return None
        requested, candidates = "last", [last]
        if cfg.get("init_from"):
            log.info("resuming %s, so init_from=%s is ignored (the run continues)", last, cfg.init_from)
            cfg.init_from = None
    elif requested:
        candidates = [Path(str(requested)).expanduser()]  # checked by validate_config
        requested = str(candidates[0])
    else:
        return None
    for path in candidates:
        log.info("resuming from %s (global step %s)", path, check_checkpoint(path).get("global_step", "?"))
    return requested


def check_run(cfg: DictConfig) -> list[str]:
    """What `validate_config` leaves to the run: the model's parts fit (`vision_spec`, no weights) and
    `stage.trainable` names parts it has. Returns the parts that will train."""
    from hydra.utils import get_class

    from dsvl.cli.models import vision_spec
    from dsvl.stages.freezing import expand_part_names

    spec = vision_spec(cfg.model)  # dsvl.model.ConfigError (one line) for parts that do not fit
    towers = [p for p, key in (("vision.low", "pixel_values"), ("vision.high", "high_res_pixel_values")) if spec.input(key)]
    trainable = cfg.stage.get("trainable")
    trainable = get_class(cfg.stage._target_).default_trainable if trainable is None else trainable
    return expand_part_names(list(trainable), [*towers, "adaptor", "llm"])


def accumulation(cfg: DictConfig, world: int) -> int:
    """Micro-batches per optimizer step: `stage.global_batch` / (micro-batch x world size), one line if it is not whole."""
    micro = int(cfg.data.get("micro_batch_size") or cfg.data.get("batch_size") or 0)
    global_batch = int(cfg.stage.get("global_batch") or micro * world)
    if micro <= 0 or global_batch % (micro * world):
        raise ConfigError(f"stage.global_batch={global_batch} is not divisible by data.micro_batch_size={micro} x world size "
                          f"{world} (trainer.devices x trainer.num_nodes)")
    steps = global_batch // (micro * world)
    if cfg.trainer.get("accumulate_grad_batches") not in (None, steps):
        raise ConfigError(f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches} contradicts stage.global_batch="
                          f"{global_batch} / (data.micro_batch_size={micro} x world size {world}) = {steps}; remove it, it is derived")
    return steps


def set_accumulation(cfg: DictConfig, trainer: Any) -> None:
    """The Trainer's accumulation from its own world size; validation every `val_every_n_steps` optimizer steps
    (Lightning counts micro-batches), else none during fit."""
    trainer.accumulate_grad_batches = steps = accumulation(cfg, int(trainer.world_size))
    if cfg.get("val_every_n_steps"):
        trainer.val_check_interval = int(cfg.val_every_n_steps) * steps
        if cfg.get("limit_val_batches") is not None:
            trainer.limit_val_batches = cfg.limit_val_batches
    else:  # no validation during fit; validate_at_end runs it once after
        trainer.limit_val_batches, trainer.val_check_interval = 0, trainer.max_steps * steps + 1


# ---------------------------------------------------------------------------------------- parts
def fill_wandb(cfg: DictConfig, stage_name: str, output_dir: Path) -> None:
    """One W&B run per run dir across restarts (its id kept in `<run dir>/wandb_run_id`, resume="allow");
    group = `run_group` (the pipeline's) or the multirun sweep's dir; job_type = the stage; offline unless
    an API key is set, so runs never need an account."""
    from dsvl.cli._config import is_multirun

    for node in (cfg.get("logger") or {}).values():
        if not node or not str(node.get("_target_", "")).endswith("WandbLogger"):
            continue
        id_file = output_dir / "wandb_run_id"
        if not id_file.is_file():
            id_file.write_text(uuid.uuid4().hex[:12] + "\n")
        group = cfg.get("run_group")
        if group is None and is_multirun():
            from hydra.core.hydra_config import HydraConfig

            group = Path(HydraConfig.get().sweep.dir).name
        mode = os.environ.get("WANDB_MODE")
        offline = mode in ("offline", "dryrun", "disabled") if mode else not os.environ.get("WANDB_API_KEY")
        with open_dict(node):
            for key, value in (("id", id_file.read_text().strip()), ("group", group), ("job_type", stage_name), ("offline", offline)):
                if node.get(key) is None:
                    node[key] = value


def build_datamodule(cfg: DictConfig, accumulation: int, supervise: str) -> Any:
    """The data config instantiated with what only the run knows: the model's vision spec (no weights
    needed), what the stage's labels supervise, accumulation and seed (unless the data config sets them)."""
    import inspect

    from hydra.utils import get_class

    from dsvl.cli.models import vision_spec

    params = inspect.signature(get_class(cfg.data._target_)).parameters
    offered = {"vision_spec": vision_spec(cfg.model), "supervise": supervise, "accumulate_grad_batches": accumulation,
               "seed": int(cfg.get("seed", 0)),
               "mc_val": OmegaConf.to_container(cfg.mc_val, resolve=True) if cfg.get("mc_val") is not None else None}
    extra = {k: v for k, v in offered.items() if cfg.data.get(k) is None and k in params}
    if cfg.data.get("supervise") not in (None, supervise):
        log.warning("data.supervise=%s differs from the stage's default (%s)", cfg.data.supervise, supervise)
    return instantiate_node(cfg.data, "data", **extra)


def data_tokenizer(datamodule: Any) -> Any | None:
    """The transformers tokenizer the datamodule encodes with (None when it has none)."""
    return getattr(getattr(getattr(datamodule, "encoder", None), "text", None), "tokenizer", None)


def tokenizer_dir(datamodule: Any) -> str | None:
    """The absolute directory of the datamodule's tokenizer: the checkpoint names it for eval/chat run from anywhere."""
    path = getattr(data_tokenizer(datamodule), "name_or_path", None)
    return str(Path(path).resolve()) if path else None


def align_model_to_data(cfg: DictConfig, datamodule: Any) -> None:
    """The model's image token id is the tokenizer's; its vocabulary must cover the tokenizer."""
    token_id = getattr(datamodule, "image_token_id", None)
    if token_id is not None and cfg.model.get("image_token_id") != token_id:
        log.info("model.image_token_id set to the tokenizer's image token id %s", token_id)
        cfg.model.image_token_id = int(token_id)
    tokenizer = data_tokenizer(datamodule)
    vocab = OmegaConf.select(cfg.model, "llm.vocab_size")
    if tokenizer is not None and vocab is not None and len(tokenizer) > int(vocab):
        raise ConfigError(f"model.llm.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")


# ---------------------------------------------------------------------------------------- entry
@hydra_app("dsvl-train", config_name="train", cleanup=close_wandb)
def main(cfg: DictConfig) -> float:
    """Console script `dsvl-train` (composition, run dir, multirun): train, return the sweep objective
    (`optimized_metric`; nan when the run did not produce it)."""
    value = train(cfg).get(cfg.get("optimized_metric") or "")
    return value if value is not None and math.isfinite(value) else float("nan")


if __name__ == "__main__":
    main()
