"""Which checkpoint a run resumes from: `ckpt_path=last`, `auto_resume=true`, or an explicit path.

A requeued or restarted job runs the same command again. With a stable run dir
(`hydra.run.dir=outputs/my_run`) and `auto_resume=true` it picks up `<ckpt_dir>/last.ckpt` when
one exists and starts fresh otherwise; `ckpt_path=last` insists that one exists. Either way the
file is opened the safe way (`weights_only`, tensors memory-mapped) before any weights are built,
so a tampered or broken checkpoint is refused in a second with one line.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dsvl.errors import CheckpointError
from dsvl.model.safe_load import UnsafeCheckpointError, check_checkpoint

log = logging.getLogger(__name__)

LAST = "last"
LAST_FILE = "last.ckpt"


class ResumeError(CheckpointError):
    """`ckpt_path` / `auto_resume` point at nothing resumable (one-line message)."""


def checkpoint_dir(cfg: DictConfig) -> Path:
    """The run's checkpoint folder (`paths.ckpt_dir`, else `<paths.output_dir>/checkpoints`)."""
    paths = cfg.get("paths") or {}
    ckpt_dir = paths.get("ckpt_dir") if hasattr(paths, "get") else None
    return Path(ckpt_dir) if ckpt_dir else Path(paths.get("output_dir", ".")) / "checkpoints"


def run_dir_is_fixed() -> bool:
    """False when Hydra made a fresh timestamped run dir (a restarted job would never find its checkpoint)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return True
        hc = HydraConfig.get()
        overrides = [*hc.overrides.hydra, *hc.overrides.task]
    except Exception:  # noqa: BLE001 - no Hydra app: the caller chose the output dir itself
        return True
    return any(o.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "paths.output_dir=", "paths.ckpt_dir=")) for o in overrides)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint this run resumes from, or None for a fresh start; checked to load safely.

    `ckpt_path=last` -> `<ckpt_dir>/last.ckpt` (must exist); `auto_resume=true` -> that file when it
    exists (a restarted job then ignores `init_from`: its own progress wins over the previous stage).
    """
    requested: Any = cfg.get("ckpt_path")
    last = checkpoint_dir(cfg) / LAST_FILE
    if requested == LAST:
        if not last.is_file():
            raise ResumeError(f"ckpt_path=last: no {LAST_FILE} in {last.parent}; point hydra.run.dir at the run to resume "
                              "(or use auto_resume=true to start fresh when there is none)")
        path = last
    elif requested:
        path = Path(str(requested)).expanduser()
        if not path.is_file():
            raise ResumeError(f"ckpt_path={requested}: no such checkpoint file (accepted: a .ckpt file, or 'last')")
    elif cfg.get("auto_resume") and not last.is_file() and not run_dir_is_fixed():
        log.warning("auto_resume=true with a new timestamped run dir (%s): a restarted job will not find this run's "
                    "checkpoints; set hydra.run.dir=outputs/<name>", last.parent.parent)
        path = None
    elif cfg.get("auto_resume") and last.is_file():
        path = last
        if cfg.get("init_from"):
            log.info("auto_resume: %s exists, so init_from=%s is ignored (the run continues)", last, cfg.init_from)
            cfg.init_from = None
    else:
        path = None
    init_from = cfg.get("init_from")
    if init_from and Path(str(init_from)).is_file():  # weights of the previous stage: refused as early if unsafe
        try:
            check_checkpoint(init_from)
        except UnsafeCheckpointError as err:
            raise UnsafeCheckpointError(f"init_from={init_from}: {err}") from None
    if path is None:
        return None
    ckpt = check_checkpoint(path)  # UnsafeCheckpointError before any weights are built
    log.info("resuming from %s (global step %s)", path, ckpt.get("global_step", "?"))
    return str(path)
