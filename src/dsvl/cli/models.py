"""The model of a Hydra `model` node: `hydra.utils.instantiate` builds its parts from their `_target_`s (the adaptor,
and SAM in a hybrid, as partials the model completes with the widths and grid of the parts before them), first on
meta, so every misfit is one line before any weights exist; then the weights the node asks for come in. Also the
way back from a stage `.ckpt` (its saved `model_config`) to a model, for `dsvl-eval` and `dsvl-chat`."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsvl.cli._config import instantiate_node
from dsvl.model import VisionLanguageModel
from dsvl.model.build import load_whole_pretrained, model_node, part_sources, whole_pretrained, without_weights
from dsvl.model.lora import apply_lora, lora_settings
from dsvl.model.materialize import init_random, materialize
from dsvl.model.spec import VisionSpec
from dsvl.stages.checkpoint import InitFromError, copy_weights, read_checkpoint

log = logging.getLogger(__name__)


def instantiate_vision(node: Any) -> Any:
    """The vision side of a plain model node. SAM in a hybrid follows SigLIP's grid, also in nodes written without
    `_partial_: true` (older checkpoints' saved `model_config`)."""
    if isinstance(node, Mapping) and isinstance(node.get("high"), Mapping):
        node = {**node, "high": {"_partial_": True, **node["high"]}}
    return instantiate_node(node, "model.vision")


def instantiate_model(config: Mapping[str, Any], weights: bool = True) -> VisionLanguageModel:
    """`VisionLanguageModel` of a plain model node's parts on the current default device; `weights=False` switches the
    parts' own `pretrained` off (on meta: sizes only). The model keeps the whole node as its `config`."""
    parts = config if weights else without_weights(config)
    return VisionLanguageModel(instantiate_vision(parts["vision"]),
                               instantiate_node(parts["adaptor"], "model.adaptor", _partial_=True),  # gets its widths
                               instantiate_node(parts["llm"], "model.llm"), config.get("image_token_id"), dict(config))


def vision_spec(cfg: Mapping[str, Any]) -> VisionSpec:
    """Image inputs (names, sizes, normalisation) and tokens per image of a model node (towers built on meta)."""
    with torch.device("meta"):
        return instantiate_vision(without_weights(model_node(cfg))["vision"]).info.spec


def build_model(cfg: Mapping[str, Any], device: torch.device | str | None = None) -> VisionLanguageModel:
    """A `VisionLanguageModel` from the Hydra `model` node (DictConfig or dict). `device="meta"`: without weights, for
    `materialize(model, template, device, sources=weight_sources(model))` after sharding (LoRA builds whole: peft
    makes its adapters on real tensors). Otherwise (default: the current default device) `materialize`'s random init,
    each part's `pretrained` (the rest gets that same init), or a whole DeepSeek-VL `pretrained` of the same shapes."""
    config = model_node(cfg)
    lora = lora_settings(config.get("lora"))
    device = torch.device(device) if device is not None else torch.get_default_device()
    if device.type == "meta" and lora is not None:  # peft (and bitsandbytes) make their layers on real tensors
        log.info("model.lora: built whole, not on meta (peft initialises its adapters on real tensors)")
        device = torch.get_default_device()
    with torch.device("meta"):
        model = instantiate_model(config, weights=False)
    if device.type == "meta":  # weights come after sharding (`materialize` per shard)
        pass
    elif whole_pretrained(config) is not None:
        model = load_whole_pretrained(model, config, lora).to(device)
    elif parts := part_sources(config):  # parts load their own weights (transformers' from_pretrained) ...
        with torch.device(device), torch.random.fork_rng(devices=[]):  # the global RNG untouched, as by materialize
            model = instantiate_model(config)
        # ... and the rest (adaptor, SAM's extra neck and convs) gets materialize's init, the one a meta build gives it
        prefixes = tuple(prefix for prefix, _ in parts)
        init_random(model, skip={n for n, _ in (*model.named_parameters(), *model.named_buffers()) if n.startswith(prefixes)})
    else:
        materialize(model, device=device)
    model.train()  # from_pretrained returns eval mode; a built model is in train mode on every path
    if config.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    if lora is not None:
        model = apply_lora(model, lora)
    log.info("built %s", {r["part"]: r["total"] for r in model.parameter_summary()})
    return model


@dataclass
class StageCheckpoint:
    """What a stage `.ckpt` holds for inference: the model (weights loaded) and the hyperparameters `VLMStage` saved."""

    model: nn.Module
    hparams: dict[str, Any]


def load_stage_checkpoint(path: str | Path) -> StageCheckpoint:
    """Rebuild the model of a dsvl stage `.ckpt` from its saved hyperparameters and load its weights; one-line
    `InitFromError` for unsafe files or checkpoints without a model config."""
    ckpt = read_checkpoint(path)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if not hparams.get("model_config"):
        raise InitFromError(f"{path}: written by an older dsvl-train (no model_config among its hyperparameters); "
                            "retrain it with this version")
    model = build_model(hparams["model_config"])
    copy_weights(model, ckpt, Path(path).expanduser())
    return StageCheckpoint(model=model, hparams=hparams)
