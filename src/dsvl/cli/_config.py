"""Shared by the console scripts: where the configs live, composing them without the
`@hydra.main` decorator, and turning a user's mistake into one line and exit code 2.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

import dsvl
from dsvl.errors import UserError

log = logging.getLogger(__name__)

# The package's own config tree (conf/ in a checkout, a copy inside the wheel), so the console
# scripts work from any directory after `pip install`.
CONFIG_DIR: Path = Path(dsvl.__file__).parent / "conf"
EXIT_USER_ERROR = 2
T = TypeVar("T")


def user_error_of(err: BaseException) -> BaseException | None:
    """The user's mistake behind `err`, or None for a dsvl bug.

    A `dsvl.errors.UserError`, also when wrapped by the library that called our code (Hydra's
    `InstantiationException` chains it as `__cause__`); a `FileNotFoundError` (a path the user
    named that a library could not open); OmegaConf's unset `???` value or unresolvable
    interpolation met while the command runs (e.g. `dsvl-eval` without `checkpoint=`).
    """
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


def compose(overrides: Sequence[str] = (), config_name: str = "train", output_dir: str | Path | None = None,
            return_hydra_config: bool = False) -> DictConfig:
    """Compose the training config as `dsvl-train` would, outside `@hydra.main` (demo, pipeline, tests).

    `output_dir` replaces Hydra's run dir (there is none outside `@hydra.main`). Hydra's global state is
    left as it was found (cleared), so `@hydra.main` can run afterwards.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        overrides = list(overrides)
        if output_dir is not None:
            overrides.append(f"paths.output_dir={Path(output_dir).resolve()}")
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)


def is_multirun() -> bool:
    """True inside a job of `dsvl-train -m ...`."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - no Hydra context at all
        return False


def guarded(prog: str, body: Callable[[], T], cleanup: Callable[[], None] | None = None) -> T:
    """Run `body`; always run `cleanup` (close loggers), even on a crash.

    A user error prints one line and exits 2 in a single run. Inside a multirun, every error is
    re-raised so Hydra records this job as failed and goes on with the other jobs of the sweep.
    """
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
        fail(prog, inner)
    finally:
        try:
            if cleanup is not None:
                cleanup()
        except Exception as err:  # noqa: BLE001 - closing must not mask the real error
            log.warning("closing loggers failed: %s", err)
