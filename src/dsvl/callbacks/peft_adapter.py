"""LoRA runs in Lightning (a no-op without `model.lora`): checkpoints keep only what trains (resume
loads non-strictly; the frozen base comes from `model.pretrained`), the adapter is written in peft's
format with the run's system prompt at the end, and `params/share/<part>` is logged (docs/finetune.md).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from dsvl.model.export import write_system_prompt
from dsvl.model.lora import ADAPTER_ONLY_KEY, adapter_state, has_lora, is_lora_param, save_adapter

log = logging.getLogger(__name__)


class PeftAdapter(Callback):
    """Adapter-only checkpoints and the peft adapter directory of a LoRA run (see the module docstring)."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    @staticmethod
    def _core(pl_module: pl.LightningModule) -> Any:
        model = getattr(pl_module, "model", None)
        return model if model is not None and has_lora(model) else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._core(pl_module) is not None:
            pl_module.strict_loading = False  # resume: the frozen base is not in the checkpoint

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = self._core(pl_module)
        if model is None:
            return
        share = {r["part"]: int(r["trainable"]) / max(int(r["total"]), 1) for r in model.parameter_summary()}
        log.info("LoRA trainable share per part: %s", ", ".join(f"{k} {v:.2%}" for k, v in share.items()))
        for logger in pl_module.loggers:
            logger.log_hyperparams({f"params/share/{part}": value for part, value in share.items()})

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        model = self._core(pl_module)
        if model is None:
            return
        keep = {f"model.{n}" for n, p in model.named_parameters() if p.requires_grad or is_lora_param(n)}
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in keep}
        checkpoint[ADAPTER_ONLY_KEY] = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = self._core(pl_module)
        if model is None:
            return
        state = adapter_state(model)  # every rank: gathers FSDP2 shards
        if not trainer.is_global_zero:
            return
        base = model.config.get("pretrained") if isinstance(model.config, dict) else None
        save_adapter(model, self.dirpath, base=str(base) if base else None, state=state)
        if hasattr(trainer.datamodule, "system_prompt"):  # dsvl-chat --adapter prompts as training did
            write_system_prompt(self.dirpath, trainer.datamodule.system_prompt)
