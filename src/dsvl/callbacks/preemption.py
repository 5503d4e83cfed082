"""Preemption: on SIGTERM (Kubernetes, SLURM preemption, spot reclaim) finish the current global
step, save `last.ckpt`, stop, and let the process exit 0.

Lightning's own SIGTERM handling stops after the current *micro*-batch without saving (and with
gradient accumulation that is mid-step, which no checkpoint can resume exactly). This callback
replaces that handler while training runs: the signal only raises a flag; at the next global-step
boundary (all ranks agree via an all-reduce) it writes `<dirpath>/last.ckpt` (weights, optimizer,
scheduler, data position, callback state) and sets `trainer.should_stop`. The same command with
`auto_resume=true` (or `ckpt_path=last`) and the same run dir then continues exactly.
SLURM's requeue signal (SIGUSR1 with `SLURMEnvironment(auto_requeue=True)`) is left to Lightning.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

LAST_NAME = "last.ckpt"


def was_preempted(trainer: pl.Trainer) -> bool:
    """True when a `PreemptionCheckpoint` callback stopped this trainer on a signal."""
    return any(isinstance(cb, PreemptionCheckpoint) and cb.preempted for cb in trainer.callbacks)


class PreemptionCheckpoint(Callback):
    """Saves `<dirpath>/last.ckpt` at the first global-step boundary after one of `signals`, then stops.

    Args:
        dirpath: checkpoint folder; None uses the ModelCheckpoint's, else `<default_root_dir>/checkpoints`.
        signals: signal names to catch (default SIGTERM).
    """

    def __init__(self, dirpath: str | None = None, signals: tuple[str, ...] | list[str] = ("SIGTERM",)) -> None:
        self.dirpath = dirpath
        self.signals = [signal.Signals[s] if isinstance(s, str) else signal.Signals(s) for s in signals]
        self.requested = False  # set from the signal handler
        self.preempted = False  # a checkpoint was saved and training stopped
        self.saved_path: Path | None = None
        self._previous: dict[signal.Signals, Any] = {}

    # ------------------------------------------------------------------ signal handling
    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            log.warning("received %s: saving a checkpoint at the end of this global step, then stopping",
                        signal.Signals(signum).name)
        self.requested = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning registered its handlers (Trainer._run), so ours replaces its SIGTERM one for the fit
        if threading.current_thread() is not threading.main_thread():
            log.warning("preemption handler not installed: training does not run in the main thread")
            return
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    # ------------------------------------------------------------------ step boundary
    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        dirpath = self.dirpath or getattr(trainer.checkpoint_callback, "dirpath", None)
        return Path(dirpath or Path(trainer.default_root_dir) / "checkpoints") / LAST_NAME

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % max(int(trainer.accumulate_grad_batches), 1):
            return  # mid global step: accumulated gradients would be lost
        requested = self.requested
        if trainer.world_size > 1:
            requested = bool(trainer.strategy.reduce_boolean_decision(requested, all=False))
        if not requested or self.preempted:
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # full state; collective: every rank is here at the same step
        self.preempted, self.saved_path = True, path
        trainer.should_stop = True
        log.warning("preempted: saved %s at global step %d; rerun the same command with auto_resume=true "
                    "(or ckpt_path=last) to continue", path, trainer.global_step)
