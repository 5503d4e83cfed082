"""`hydra_app`: a Hydra task function as a console script that answers a user's mistake in one line.

    @hydra_app("dsvl-eval", config_name="eval")
    def main(cfg: DictConfig) -> None: ...

`main()` (the console-script entry) first composes the command line the way Hydra will and prints a
composition error (unknown option, key or override syntax) as `dsvl-eval: error: <one line>` with exit
code 2; then Hydra runs the task, and a `dsvl.errors.UserError` raised by it ends the same way
(`guarded`). Bugs keep their traceback. Scripts without Hydra (argparse) call `guarded` directly.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from dsvl.cli._config import CONFIG_DIR, fail, guarded
from dsvl.cli.validate import precheck_overrides


def hydra_app(prog: str, config_name: str, cleanup: Callable[[], None] | None = None
              ) -> Callable[[Callable[[DictConfig], Any]], Callable[[], None]]:
    """Decorate `task(cfg)`; the result is the console script's `main()` (reads `sys.argv`).

    `cleanup` runs after the task however it ends (e.g. closing loggers).
    """

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
