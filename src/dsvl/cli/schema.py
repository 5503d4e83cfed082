"""Typed schemas with ranges for the config groups users override (pydantic models): `check_schema(cfg)` raises
a one-line `ConfigError` naming the first wrong key, the value given and what is accepted, e.g.
`optim.lr=-1.0: expected a number greater than 0`.

Every field has a default, so a schema only checks keys that are present; unknown keys are allowed
here (Hydra's struct mode already refuses typos, and `+trainer.some_flag=...` stays possible).
A new `_target_` with limits of its own (a callback, a logger) gets an entry in `TARGET_SCHEMAS`.
"""
from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

from lightning.fabric.connector import _PRECISION_INPUT
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dsvl.data.grouped import MODES
from dsvl.errors import ConfigError

# Lightning's accepted `precision` values (ints and strings), flattened from its own type.
PRECISIONS: tuple[Any, ...] = tuple(v for lit in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(lit))

PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
Shards = Union[str, list[str]]


class Schema(BaseModel):
    """Lax types as in YAML ("12" is 12), no NaN/inf, numbers accepted where text is expected."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, coerce_numbers_to_str=True, populate_by_name=True)


class Targeted(Schema):
    """A node Hydra instantiates: `_target_` names the class (pydantic hides leading underscores, so aliases)."""

    target: Optional[str] = Field(None, alias="_target_")
    partial: Optional[bool] = Field(None, alias="_partial_")


class TrainerConfig(Targeted):
    """`trainer`: Lightning `Trainer` arguments (others pass through unchecked)."""

    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = 1
    num_nodes: PositiveInt = 1
    precision: Literal[PRECISIONS] = "32-true"  # type: ignore[valid-type]
    max_steps: PositiveInt = 100  # dsvl counts training in global steps: -1 (endless) is not accepted
    max_epochs: Annotated[int, Field(ge=-1)] = -1
    gradient_clip_val: Optional[Annotated[float, Field(ge=0.0)]] = None
    gradient_clip_algorithm: Optional[Literal["norm", "value"]] = None
    accumulate_grad_batches: Optional[PositiveInt] = None
    log_every_n_steps: PositiveInt = 1
    num_sanity_val_steps: Annotated[int, Field(ge=-1)] = 0
    enable_model_summary: bool = True
    deterministic: Union[bool, Literal["warn"], None] = None
    benchmark: Optional[bool] = None
    default_root_dir: Optional[str] = None

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> Any:
        if isinstance(v, int) and (v == 0 or v < -1):
            raise ValueError("expected a count >= 1, -1 (all), 'auto' or a list of device ids")
        return v


class OptimConfig(Targeted):
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    betas: Optional[tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]]] = None
    eps: Annotated[float, Field(ge=0.0)] = 1e-8
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0


class SchedulerConfig(Targeted):
    warmup_steps: Count = 0
    total_steps: PositiveInt = 1
    min_lr_ratio: Ratio = 0.0
    milestones: list[Annotated[float, Field(gt=0.0)]] = []
    factors: list[Annotated[float, Field(gt=0.0)]] = []


class StageConfig(Targeted):
    trainable: Optional[list[str]] = None  # part names: checked by `dsvl.stages.freezing.expand_part_names`
    global_batch: Optional[PositiveInt] = None


class Source(Schema):
    """One data source of `data.train_sources` / `data.val_sources`."""

    urls: Shards
    weight: Annotated[float, Field(ge=0.0)] = 1.0
    modality: Literal["text", "multimodal"] = "text"
    format: Literal["dsvl", "caption"] = "dsvl"


class Schedule(Schema):
    """`data.schedule`: the share of text-only global steps, warmed from `start` to `target`."""

    start: Ratio = 1.0
    target: Ratio = 0.7
    warmup_steps: Count = 0
    shape: Literal["linear", "cosine"] = "linear"


class Packing(Schema):
    """`data.packing` per modality (`true` packs both)."""

    text: bool = False
    multimodal: bool = False


class DataConfig(Targeted):
    """`data`: the datamodule (`dsvl.data.DSVLDataModule` arguments)."""

    tokenizer: Optional[str] = None
    train_sources: Union[dict[str, Optional[Source]], list[Source], None] = None
    val_sources: Union[dict[str, Optional[Source]], list[Source], None] = None
    micro_batch_size: PositiveInt = 8
    val_batch_size: Optional[PositiveInt] = None
    max_length: Annotated[int, Field(ge=2)] = 512
    packing: Union[bool, Packing] = False
    packing_buffer: PositiveInt = 256
    pad_to_max_length: bool = False
    mode: Literal[MODES] = "grouped"  # type: ignore[valid-type]
    schedule: Optional[Schedule] = None
    accumulate_grad_batches: Optional[PositiveInt] = None
    supervise: Optional[Literal["all", "assistant"]] = None
    system_prompt: Optional[str] = None
    vision_spec: Optional[dict[str, Any]] = None  # filled from the model (dsvl.cli.models.vision_spec)
    num_workers: Count = 0
    prefetch_factor: Optional[PositiveInt] = None
    shuffle_buffer: Count = 1000
    seed: Count = 0
    val_max_batches: Optional[PositiveInt] = None
    pin_memory: bool = False
    parts: Optional[PositiveInt] = None  # logical data parts (elastic resume; docs/scale.md)
    elastic_restart: bool = False


class PathsConfig(Schema):
    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "outputs"
    output_dir: Optional[str] = None
    ckpt_dir: Optional[str] = None


class MCValConfig(Schema):
    """`mc_val`: multiple-choice validation while training (val/mc_acc)."""

    shards: Optional[Shards] = None
    batch_size: PositiveInt = 8
    limit: Optional[PositiveInt] = None
    mode: Literal["text", "letter"] = "text"
    max_length: Optional[PositiveInt] = None


class LoggerConfig(Targeted):
    """One entry of `logger` (CSV, TensorBoard, W&B): the basics every Lightning logger shares."""

    target: str = Field(alias="_target_")
    save_dir: Optional[str] = None
    name: Optional[str] = None
    version: Union[int, str, None] = None
    offline: Optional[bool] = None
    log_model: Union[bool, Literal["all"]] = False


class NonFiniteGuardConfig(Targeted):
    max_consecutive: PositiveInt = 5


class ModelCheckpointConfig(Targeted):
    dirpath: Optional[str] = None
    filename: Optional[str] = None
    auto_insert_metric_name: bool = True
    every_n_train_steps: Optional[PositiveInt] = None
    save_top_k: Annotated[int, Field(ge=-1)] = 1
    save_last: Union[bool, Literal["link"], None] = None


class SkipReportConfig(Targeted):
    dirpath: Optional[str] = None


class ThroughputMonitorConfig(Targeted):
    window_size: Annotated[int, Field(ge=2)] = 100  # Lightning asserts it (a rate needs two points)


class SampleLoggerConfig(Targeted):
    num_samples: Annotated[int, Field(ge=0)] = 4
    max_new_tokens: PositiveInt = 24


class ProgressBarConfig(Targeted):
    refresh_rate: Annotated[int, Field(ge=0)] = 1


class CSVLoggerConfig(LoggerConfig):
    flush_logs_every_n_steps: PositiveInt = 100


# limits of callbacks and loggers (dict-of-`_target_` entries) by the class they instantiate
TARGET_SCHEMAS: dict[str, type[Schema]] = {
    "NonFiniteGuard": NonFiniteGuardConfig,
    "ModelCheckpoint": ModelCheckpointConfig,
    "RunCheckpoint": ModelCheckpointConfig,  # dsvl.callbacks: Lightning's ModelCheckpoint, also saving at the end
    "ThroughputMonitor": ThroughputMonitorConfig,
    "SampleLogger": SampleLoggerConfig,
    "SkipReport": SkipReportConfig,
    "StepProgressBar": ProgressBarConfig,
    "TQDMProgressBar": ProgressBarConfig,
    "CSVLogger": CSVLoggerConfig,
    "ResumableCSVLogger": CSVLoggerConfig,  # dsvl.callbacks: Lightning's CSVLogger that continues its file on resume
}

S = TypeVar("S", bound=Schema)
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # Lightning's seed_everything range


class TrainConfig(Schema):
    """`conf/train.yaml`: the top-level keys, then the groups (the first wrong key is reported)."""

    task_name: str = "train"
    tags: list[str] = []
    seed: Seed = 0
    torch_threads: Optional[PositiveInt] = None
    init_from: Optional[str] = None
    ckpt_path: Optional[str] = None
    auto_resume: bool = False
    val_every_n_steps: Optional[PositiveInt] = None
    limit_val_batches: Union[Ratio, Annotated[int, Field(ge=0)], None] = None  # a fraction or a count
    validate_at_end: bool = True
    mc_val: Optional[MCValConfig] = None
    export_dir: Optional[str] = None
    optimized_metric: Optional[str] = None
    run_group: Optional[str] = None  # the W&B group (dsvl-pipeline sets it)
    val_benchmarks: Optional[dict[str, Any]] = None  # name -> {path, ...}: dsvl.callbacks.benchmarks
    paths: Optional[PathsConfig] = None
    trainer: Optional[TrainerConfig] = None
    optim: Optional[OptimConfig] = None
    scheduler: Optional[SchedulerConfig] = None
    stage: Optional[StageConfig] = None
    data: Optional[DataConfig] = None
    logger: Optional[dict[str, Optional[LoggerConfig]]] = None


class EvalMCConfig(Schema):
    shards: Optional[Shards] = None
    modes: list[Literal["text", "letter"]] = ["text"]
    batch_size: PositiveInt = 8
    limit: Optional[PositiveInt] = None
    max_length: Optional[Annotated[int, Field(ge=2)]] = None


class EvalTextConfig(Schema):
    shards: Optional[Shards] = None
    batch_size: PositiveInt = 8
    max_length: Annotated[int, Field(ge=2)] = 2048
    limit: Optional[PositiveInt] = None


class EvalConfig(Schema):
    """`conf/eval.yaml` (dsvl-eval); each `benchmarks` entry is checked by `dsvl.eval.BenchmarkSpec`."""

    task_name: str = "eval"
    checkpoint: str
    tokenizer: Optional[str] = None
    adapter: Optional[str] = None
    system_prompt: Optional[str] = "auto"
    device: Optional[str] = "auto"
    dtype: Optional[str] = None
    mc: EvalMCConfig = EvalMCConfig()
    text: EvalTextConfig = EvalTextConfig()
    benchmarks: Optional[dict[str, Optional[dict[str, Any]]]] = None
    report: str = "eval_report.json"
    paths: Optional[PathsConfig] = None


def _describe(err: dict[str, Any]) -> str:
    """pydantic's message, phrased as what is expected ("Input should be ..." -> "expected ...")."""
    msg = str(err["msg"])
    if msg.startswith("Input should be "):
        msg = msg[len("Input should be "):]
        return f"expected a value {msg}" if msg.startswith(("greater", "less")) else f"expected {msg}"
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _key(loc: tuple[Any, ...], prefix: str) -> str:
    """`('trainer', 'max_steps')` -> `trainer.max_steps` (list indices as `[i]`, union branch names dropped)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or "-" in str(part) or part in ("int", "float", "str", "bool"):
            continue  # a union member's name (e.g. 'list[Source]', 'constrained-int'), not a key
        else:
            out += f".{part}" if out else str(part)
    return out


def validate_against(schema: type[S], values: Any, prefix: str = "") -> S:
    """Plain `values` validated with `schema` (typed, coerced); the first error as a one-line `ConfigError`."""
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        key = _key(first["loc"], prefix)
        value = first.get("input")
        raise ConfigError(f"{key}={str(value).lower() if isinstance(value, bool) else value}: {_describe(first)}") from None


def check_schema(values: dict[str, Any]) -> None:
    """Types and ranges of the train config (resolved to plain values), then of known `_target_` nodes."""
    validate_against(TrainConfig, values)
    for group in ("callbacks", "logger"):
        for name, node in (values.get(group) or {}).items():
            target = str(node.get("_target_", "")) if isinstance(node, dict) else ""
            schema = TARGET_SCHEMAS.get(target.rpartition(".")[2])
            if schema is not None:
                validate_against(schema, node, f"{group}.{name}")
