"""Preemption: on SIGTERM finish the current global step, stop, and let the process exit 0 (docs/reliability.md).

Lightning's own SIGTERM handling stops after the current *micro*-batch: mid-step under gradient
accumulation, not exactly resumable. Here the signal raises a flag and the fit stops at the next global-step
boundary (all ranks agree), where `RunCheckpoint` saves `last.ckpt`. SLURM requeue is Lightning's.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from dsvl.errors import ConfigError

log = logging.getLogger(__name__)


def was_preempted(trainer: pl.Trainer) -> bool:
    """True when a `PreemptionCheckpoint` callback stopped this trainer on a signal."""
    return any(isinstance(cb, PreemptionCheckpoint) and cb.preempted for cb in trainer.callbacks)


class PreemptionCheckpoint(Callback):
    """Stops training at the first global-step boundary after one of `signals` (default SIGTERM)."""

    def __init__(self, signals: tuple[str, ...] | list[str] = ("SIGTERM",)) -> None:
        names = [signals] if isinstance(signals, (str, int)) else list(signals)
        try:
            self.signals = [signal.Signals[s] if isinstance(s, str) else signal.Signals(s) for s in names]
        except (KeyError, ValueError, TypeError):
            raise ConfigError(f"callbacks.preemption.signals={signals!r}; accepted: a list of signal names such as "
                              "[SIGTERM, SIGUSR1]") from None
        self.requested = False  # set from the signal handler
        self.preempted = False  # training stopped on a signal
        self._previous: dict[signal.Signals, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            log.warning("received %s: stopping at the end of this global step", signal.Signals(signum).name)
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

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.fit_loop._should_accumulate() or self.preempted:
            return  # mid global step: accumulated gradients would be lost
        requested = self.requested
        if trainer.world_size > 1:
            requested = bool(trainer.strategy.reduce_boolean_decision(requested, all=False))
        if requested:
            self.preempted = trainer.should_stop = True
