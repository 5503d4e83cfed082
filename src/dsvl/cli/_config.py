"""Shared by the console scripts: where the configs live, `compose` outside `@hydra.main`, and a user's
mistake as one line and exit code 2 (docs/architecture.md, "The run path"): `precheck_overrides` reports
Hydra's composition errors, `guarded` a `dsvl.errors.UserError` raised by the task (scripts without Hydra
call it directly); bugs keep their traceback.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

import dsvl
from dsvl.errors import UserError, located

log = logging.getLogger(__name__)

# The package's own config tree (conf/ in a checkout, a copy inside the wheel), so the console
# scripts work from any directory after `pip install`.
CONFIG_DIR: Path = Path(dsvl.__file__).parent / "conf"
EXIT_USER_ERROR = 2
T = TypeVar("T")


def user_error_of(err: BaseException) -> BaseException | None:
    """The user's mistake behind `err` (a `UserError`, also chained as `__cause__` by Hydra's `InstantiationException`;
    a path a library could not open; an unset `???` or unresolvable interpolation met while running), else None."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, (UserError, FileNotFoundError, MissingMandatoryValue, InterpolationResolutionError)):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__  # explicit `raise ... from err` only: an error *during* handling is a bug of its own
    return None


def one_line(err: BaseException) -> str:
    """The first line of an error message (OmegaConf adds key/type context lines)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def fail(prog: str, err: BaseException | str) -> NoReturn:
    """Print `prog: error: <one line>` to stderr and exit with code 2 (no traceback)."""
    msg = err if isinstance(err, str) else one_line(err)
    print(f"{prog}: error: {msg}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (exit 2), like every dsvl console script."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def ranged(kind: type, low: float, high: float = float("inf"), low_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: `kind(value)` within [low, high] ((low, high] when `low_open`), else argparse's one line."""
    def parse(value: str) -> Any:
        try:
            n = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {'an integer' if kind is int else 'a number'}") from None
        if n < low or (low_open and n == low) or n > high:
            bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high != float("inf") else "")
            raise argparse.ArgumentTypeError(f"{value} must be {bounds}")
        return n

    return parse


positive_int = ranged(int, 1)


def compose(overrides: Sequence[str] = (), config_name: str | None = "train", output_dir: str | Path | None = None,
            return_hydra_config: bool = False) -> DictConfig:
    """Compose the training config as `dsvl-train` would, outside `@hydra.main`, with `output_dir` as the run dir;
    Hydra's global state is left as it was found (a surrounding Hydra app's included). An override Hydra refuses
    (a typo in a key, an unknown option, bad syntax) is a one-line ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dsvl.errors import ConfigError

    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            overrides = list(overrides)
            if output_dir is not None:
                overrides.append(f"paths.output_dir={Path(output_dir).resolve()}")
            return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_error_line(err, overrides)) from None
    finally:
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def is_multirun() -> bool:
    """True inside a job of `dsvl-train -m ...`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def guarded(prog: str, body: Callable[[], T], cleanup: Callable[[], None] | None = None) -> T:
    """Run `body`, then always `cleanup` (close loggers). A user error prints one line and exits 2 (with
    HYDRA_FULL_ERROR=1, its traceback is logged first); inside a multirun every error is re-raised, so Hydra records
    the job as failed and goes on with the sweep."""
    try:
        return body()
    except Exception as err:
        inner = user_error_of(err)
        if inner is None:
            log.exception("run crashed")
            raise
        if is_multirun():
            log.error("job failed: %s", one_line(inner))
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's switch for the whole chain, honoured here too
            log.error("traceback of the error below", exc_info=err)
        fail(prog, inner)
    finally:
        try:
            if cleanup is not None:
                cleanup()
        except Exception as err:  # noqa: BLE001 - closing must not mask the real error
            log.warning("closing loggers failed: %s", err)


def instantiate_node(node: Any, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node, _convert_="all", **kwargs)` with a user's mistake in the node (a `_target_` that
    does not import: `check_targets`; an unknown key, a package not installed, sizes torch cannot build, a part's own
    `UserError`) as a one-line error of the same kind that names where it sits (`key` and the sub-node Hydra
    reports); a bug keeps its traceback."""
    import re

    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from dsvl.errors import ConfigError

    if not isinstance(node, Mapping) or "_target_" not in node:
        raise ConfigError(f"{key} has no _target_; accepted: a node like {{_target_: dsvl.model.adaptor.MLPGelu, ...}}")
    check_targets(node, key)
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        sub = re.search(r"\nfull_key: (\S+)", str(err))
        where = key if sub is None else sub[1] if sub[1].startswith(key) else f"{key}.{sub[1]}"
        cause, first = err.__cause__, one_line(err)
        target = first.split("'")[1] if first.count("'") >= 2 else "its _target_"
        if isinstance(cause, UserError):
            raise type(cause)(located(where, str(cause))) from None
        if cause is None:  # Hydra's own refusal, e.g. a blocklisted target such as os.system in a checkpoint's config
            raise ConfigError(f"{where}: {' '.join(str(err).split())}") from None
        if isinstance(cause, ImportError):
            raise ConfigError(f"{where} needs a package that is not installed ({one_line(cause)}); pip install it") from None
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        if isinstance(cause, (TypeError, ValueError, MisconfigurationException)):  # e.g. an unknown keyword
            raise ConfigError(f"{where}: invalid settings for {target}: {' '.join(str(cause).split())}") from None
        if isinstance(cause, (RuntimeError, ArithmeticError)):  # torch / transformers building from these values
            raise ConfigError(f"{where}: {target} cannot be built with these settings ({type(cause).__name__}: "
                              f"{one_line(cause)})") from None
        raise


def check_targets(node: Any, key: str = "") -> None:
    """Hydra's own keys in a node and its sub-nodes, before anything is built: each `_target_` a dotted path that
    imports to a class or function, each `_partial_` a bool; else a one-line ConfigError naming the key."""
    from hydra._internal.utils import _locate  # what `instantiate` uses; `get_object` also logs its failures

    from dsvl.errors import ConfigError

    if isinstance(node, Sequence) and not isinstance(node, str):
        for i, value in enumerate(node):
            check_targets(value, f"{key}[{i}]")
    if not isinstance(node, Mapping):
        return
    accepted = "accepted: a dotted import path of a class or function, like dsvl.model.adaptor.MLPGelu"
    if "_target_" in node:
        target, where = node["_target_"], f"{key}._target_" if key else "_target_"
        if not (isinstance(target, str) and "." in target):
            raise ConfigError(f"{where}={target!r}; {accepted}")
        try:
            found = _locate(target)
        except Exception as err:  # noqa: BLE001 - whatever importing it raised, the path is the user's to fix
            cause = err.__cause__ or err
            raise ConfigError(f"{where}={target!r} cannot be imported: {str(cause).strip().splitlines()[-1]}") from None
        if not callable(found):
            raise ConfigError(f"{where}={target!r} is a {type(found).__name__}; {accepted}")
    if not isinstance(node.get("_partial_", False), bool):
        raise ConfigError(f"{key}._partial_={node['_partial_']!r}; accepted: true or false")
    for sub, value in node.items():
        check_targets(value, f"{key}.{sub}" if key else str(sub))


HYDRA_FLAGS_PASS = ("-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--resolve",
                    "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                    "--shell-completion", "-sc", "--experimental-rerun", "--version")


# ---------------------------------------------------------------------------------------- composition errors
def hydra_error_line(err: BaseException, overrides: Sequence[str] = ()) -> str:
    """One line for a Hydra composition / override error: the key, and the accepted options when known."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(err, OverrideParseException):
        return f"cannot parse the override {err.override!r}: {one_line(err)} (see Hydra's override grammar)"
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        missing = str(err.missing_cfg_file)
        group, name = missing.rpartition("/")[::2]
        for key, sep, value in (o.partition("=") for o in overrides):  # the option as typed, ('experiment', 'demo/x')
            if sep and f"{key.lstrip('+~').lstrip('/')}/{value}" == missing:
                group, name = key.lstrip("+~").lstrip("/"), value
                break
        if group:
            root = CONFIG_DIR / group  # the group folder's options, nested ones as `sub/option`
            options = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
            options = options or sorted(err.options or [])
            accepted = f"accepted: {', '.join(options)}" if options else f"the config group '{group}' has no options"
            return f"{group}={name}: unknown option for '{group}'; {accepted}"
        return f"config '{name}' not found"
    first, text = one_line(err).strip(), str(err)
    if "is not in struct" in text or "To append to your config" in text:
        return f"{first.rstrip('.')}: no such key (check the spelling; prefix with '+' to add a new key)"
    if first.startswith("Ambiguous value"):
        return f"{first}: use -m to sweep over the values, key=[a,b] for a list, or quote it for a string"
    return first


def precheck_overrides(overrides: Sequence[str], config_name: str = "train") -> str | None:
    """The one-line error message when composing `config_name` with `overrides` fails, else None (also for
    command lines with Hydra flags, `-m`, `--cfg`, ...: Hydra handles those itself)."""
    if any(a.split("=", 1)[0] in HYDRA_FLAGS_PASS for a in overrides if a.startswith("-")):
        return None
    from dsvl.errors import ConfigError

    try:
        compose(overrides, config_name, return_hydra_config=True)
    except ConfigError as err:
        return str(err)
    return None


def hydra_app(prog: str, config_name: str, cleanup: Callable[[], None] | None = None
              ) -> Callable[[Callable[[DictConfig], Any]], Callable[[], None]]:
    """Decorate `task(cfg)` into the console script's `main()`; `cleanup` runs after the task however it ends."""
    import hydra

    def wrap(task: Callable[[DictConfig], Any]) -> Callable[[], None]:
        @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
        @functools.wraps(task)  # Hydra names the job after the task's module
        def run(cfg: DictConfig) -> Any:
            return guarded(prog, lambda: task(cfg), cleanup)

        @functools.wraps(task)
        def main() -> None:
            error = precheck_overrides(sys.argv[1:], config_name)
            if error:
                fail(prog, error)
            run()

        return main

    return wrap
