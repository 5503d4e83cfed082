"""Config checks that run before any weights load, so a typo costs seconds and one line (exit 2).

Three layers, in the order a run meets them:
1. `precheck_overrides`: composes the config the way `@hydra.main` will and turns Hydra's
   multi-line composition errors (unknown preset or group option, unknown key, bad override
   syntax) into one line naming the key and the accepted options.
2. `validate_config`: values Hydra cannot know are wrong (language ratio outside [0, 1], data
   sources whose shards do not exist, the non-finite guard's limit).
3. `user_error_of`: errors raised inside `hydra.utils.instantiate` arrive wrapped in an
   `InstantiationException`; the user error inside is what the message should show.
Model-shape checks (adaptor widths) and batch arithmetic live with the code that knows them
(`dsvl.model.vision_spec`, `dsvl.stages.runner.plan_run`) and run right after these.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

HYDRA_FLAGS_PASS = ("-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--resolve",
                    "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                    "--shell-completion", "-sc", "--experimental-rerun", "--version")


class RunConfigError(ValueError):
    """A config value that cannot work; the message is one line naming the key and what is accepted."""


# ---------------------------------------------------------------------------------------- 1. composition
def _group_options(group: str) -> list[str]:
    """Option names of a config group folder (nested folders as `sub/option`)."""
    from dsvl.cli._config import CONFIG_DIR

    root = CONFIG_DIR / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")) if root.is_dir() else []


def _user_override(missing: str, overrides: Sequence[str]) -> tuple[str, str] | None:
    """The (group, option) the user typed that names the missing config file, e.g. ('experiment', 'demo/x')."""
    for o in overrides:
        key, sep, value = o.partition("=")
        key = key.lstrip("+~").lstrip("/")
        if sep and f"{key}/{value}" == missing:
            return key, value
    return None


def hydra_error_line(err: BaseException, overrides: Sequence[str] = ()) -> str:
    """One line for a Hydra composition / override error: the key, and the accepted options when known."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(err, OverrideParseException):
        return f"cannot parse the override {err.override!r}: {str(err).strip().splitlines()[0]} (see Hydra's override grammar)"
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        missing = str(err.missing_cfg_file)
        group, name = _user_override(missing, overrides) or missing.rpartition("/")[::2]
        if group:
            options = _group_options(group) or sorted(err.options or [])
            accepted = f"accepted: {', '.join(options)}" if options else f"the config group '{group}' has no options"
            return f"{group}={name}: unknown option for '{group}'; {accepted}"
        return f"config '{name}' not found"
    text = str(err).strip() or type(err).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0]
    if any("is not in struct" in ln for ln in lines) or any(ln.startswith("To append to your config") for ln in lines):
        return f"{first.rstrip('.')}: no such key (check the spelling; prefix with '+' to add a new key)"
    if first.startswith("Ambiguous value"):
        return f"{first}: use -m to sweep over the values, key=[a,b] for a list, or quote it for a string"
    return first


def precheck_overrides(overrides: Sequence[str], config_name: str = "train") -> str | None:
    """Compose `config_name` with `overrides`; the one-line error message when that fails, else None.

    Skipped (None) for command lines with Hydra flags (`-m`, `--cfg`, ...): Hydra handles those itself.
    """
    if any(a.split("=", 1)[0] in HYDRA_FLAGS_PASS for a in overrides if a.startswith("-")):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dsvl.cli._config import CONFIG_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        return hydra_error_line(err, overrides)
    finally:
        GlobalHydra.instance().clear()
    return None


# ---------------------------------------------------------------------------------------- 2. values
def check_sources(data: Any) -> None:
    """Every data source's shards must exist (the datamodule's own check, run before any weights load)."""
    from hydra.utils import get_class

    from dsvl.data.errors import DataConfigError
    from dsvl.data.mixture import parse_sources

    target = data.get("_target_") if data is not None else None
    check = getattr(get_class(target), "check_sources", None) if target else None
    if check is None:
        return
    for key in ("train_sources", "val_sources"):
        node = data.get(key)
        if not node:
            continue
        try:
            check(parse_sources(OmegaConf.to_container(node, resolve=True)), f"data.{key}")
        except DataConfigError as err:
            raise RunConfigError(f"{err} (accepted: a folder of .tar shards, a glob, a brace pattern, or a list of "
                                 "existing shard files)") from None


def check_schedule(data: Any, max_steps: int | None = None) -> None:
    """The modality schedule, checked by `ModalitySchedule` itself (language ratios in [0, 1], warm-up >= 0);
    a warm-up longer than training only warns (short debug runs do that on purpose)."""
    from dsvl.data.errors import DataConfigError
    from dsvl.data.schedule import ModalitySchedule

    schedule = data.get("schedule") if data is not None else None
    if not schedule:
        return
    try:
        sched = ModalitySchedule(**OmegaConf.to_container(schedule, resolve=True))
    except (DataConfigError, TypeError) as err:
        raise RunConfigError(f"data.schedule: {err} (start/target: the share of text-only global steps)") from None
    if max_steps and sched.warmup_steps > max_steps:
        log.warning("data.schedule.warmup_steps=%d > trainer.max_steps=%d: the language ratio never reaches its target %s",
                    sched.warmup_steps, max_steps, sched.target)


def check_callbacks(callbacks: Any) -> None:
    """Limits of the reliability callbacks (instantiated only after the model is built)."""
    for name, node in (callbacks or {}).items():
        if not isinstance(node, DictConfig) or not str(node.get("_target_", "")).endswith("NonFiniteGuard"):
            continue
        limit = node.get("max_consecutive")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise RunConfigError(f"callbacks.{name}.max_consecutive={limit} must be an integer >= 1 "
                                 "(consecutive non-finite steps before the run stops)")


def validate_config(cfg: DictConfig) -> None:
    """Value checks Hydra cannot do; raises `RunConfigError` (one line) before any weights load."""
    data = cfg.get("data")
    trainer = cfg.get("trainer") or {}
    check_schedule(data, int(trainer.get("max_steps") or 0) or None)
    check_sources(data)
    check_callbacks(cfg.get("callbacks"))


# ---------------------------------------------------------------------------------------- 3. unwrapping
def user_error_of(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """`err` itself or the user error it wraps (Hydra's `InstantiationException` chains the real one)."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, types):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__  # explicit `raise ... from err` only: an error *during* handling is a bug of its own
    return None

