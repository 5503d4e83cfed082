"""`build_model(cfg)` and `vision_spec(cfg)`: from the Hydra `model` node to a model, checked before any weights exist.

The node has sub-nodes `vision`, `adaptor`, `llm` (each with a `_target_` resolved here by import,
no Hydra needed) and top-level keys `image_token_id`, `pretrained`, `hub_id`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .cfgutil import describe_node, split_target, to_plain
from .errors import ConfigError
from .llm import LLMInfo
from .lora import lora_settings
from .spec import VisionSpec
from .vision import VisionInfo
from .vlm import VisionLanguageModel

log = logging.getLogger(__name__)

MODEL_KEYS = ("vision", "adaptor", "llm", "image_token_id", "pretrained", "hub_id", "gradient_checkpointing", "lora")


@dataclass
class ModelPlan:
    """Everything build_model will do, worked out from the config alone."""

    config: dict[str, Any]
    vision_target: Callable[..., Any]
    vision_kwargs: dict[str, Any]
    vision: VisionInfo
    adaptor_target: Callable[..., Any]
    adaptor_kwargs: dict[str, Any]
    llm_target: Callable[..., Any]
    llm_kwargs: dict[str, Any]
    llm: LLMInfo
    image_token_id: int
    pretrained: str | None


def plan_model(cfg: Mapping[str, Any]) -> ModelPlan:
    """Check that the parts fit (widths, grids, ids, targets) and resolve derived widths; raises ConfigError."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model config must be a mapping with vision, adaptor, llm; got {type(cfg).__name__}")
    config = with_checkpoint_architecture(to_plain(cfg))
    missing = [k for k in ("vision", "adaptor", "llm") if config.get(k) is None]
    if missing:
        raise ConfigError(f"model config lacks {missing}; accepted: a node with vision, adaptor, llm (e.g. model=tiny)")
    vision_target, vision_kwargs, vision = describe_node(config["vision"], "model.vision")
    llm_target, llm_kwargs, llm = describe_node(config["llm"], "model.llm")
    adaptor_target, adaptor_raw = split_target(config["adaptor"], "model.adaptor")
    resolve = getattr(adaptor_target, "resolve", None)
    if resolve is None:
        raise ConfigError(f"model.adaptor._target_ {adaptor_target.__qualname__} has no resolve(); adaptors must declare their widths")
    adaptor_kwargs = resolve("model.adaptor", vision, llm.hidden_size, **adaptor_raw)

    token = config.get("image_token_id")
    if isinstance(token, bool) or not isinstance(token, int):
        raise ConfigError(f"model.image_token_id must be an int (the tokenizer's image token id), got {token!r}")
    if not 0 <= token < llm.vocab_size:
        raise ConfigError(f"model.image_token_id={token} is outside the LLM vocabulary [0, {llm.vocab_size}); accepted: a token id of the tokenizer")

    pretrained = config.get("pretrained")
    if pretrained is True:
        if not config.get("hub_id"):
            raise ConfigError("model.pretrained=true needs model.hub_id; accepted: a hub id or local directory")
        pretrained = config["hub_id"]
    elif pretrained in (None, False):
        pretrained = None
    return ModelPlan(
        config=config,
        vision_target=vision_target,
        vision_kwargs=vision_kwargs,
        vision=vision,
        adaptor_target=adaptor_target,
        adaptor_kwargs=adaptor_kwargs,
        llm_target=llm_target,
        llm_kwargs=llm_kwargs,
        llm=llm,
        image_token_id=token,
        pretrained=str(pretrained) if pretrained is not None else None,
    )


def vision_spec(cfg: Mapping[str, Any]) -> VisionSpec:
    """Image inputs (names, sizes, normalisation) and tokens per image of a model config, without building weights."""
    return plan_model(cfg).vision.spec


def _instantiate(plan: ModelPlan) -> VisionLanguageModel:
    from_config = getattr(plan.vision_target, "from_config", None)
    vision = from_config(key="model.vision", **plan.vision_kwargs) if from_config else plan.vision_target(**plan.vision_kwargs)
    adaptor = plan.adaptor_target(**plan.adaptor_kwargs)
    llm = plan.llm_target(**plan.llm_kwargs)
    return VisionLanguageModel(vision, adaptor, llm, plan.image_token_id, config=plan.config)


def build_model(cfg: Mapping[str, Any]) -> VisionLanguageModel:
    """A `VisionLanguageModel` from the Hydra `model` node (DictConfig or dict).

    Parts come from their `_target_`s with their own `pretrained` settings; a top-level
    `pretrained` (True = `hub_id`, or a path / hub id) loads a whole transformers DeepSeek-VL
    checkpoint instead, after checking that it has exactly the configured shapes.
    Honors the current default device (e.g. `with torch.device("meta")` for counting).
    """
    plan = plan_model(cfg)
    if plan.pretrained is None:
        model = _instantiate(plan)
    else:
        from .hf_interop import load_hf_pretrained

        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in _instantiate(plan).state_dict().items()}
        lora = lora_settings(plan.config.get("lora"))
        model = load_hf_pretrained(plan.pretrained, image_token_id=plan.image_token_id, lora=lora)
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if got != expected and not (lora and lora.load_in_4bit):  # 4-bit weights are packed: other shapes
            diff = sorted(set(got.items()) ^ set(expected.items()))[:3]
            raise ConfigError(f"model.pretrained={plan.pretrained!r} does not have the configured shapes (first differences: {diff}); use its matching preset")
        loaded_tie = bool(model.llm.config.tie_word_embeddings)
        if loaded_tie != bool(plan.llm.config.tie_word_embeddings):
            log.warning("model.pretrained=%s ties word embeddings=%s, unlike model.llm.tie_word_embeddings; following the checkpoint", plan.pretrained, loaded_tie)
        # the checkpoint's own part configs (what was really loaded) plus this node's top-level keys
        model.config = {**model.config, **{k: v for k, v in plan.config.items() if k not in ("vision", "adaptor", "llm")}}
    if plan.config.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    model = _with_lora(model, plan.config.get("lora"))
    log.info("built %s", {r["part"]: r["total"] for r in model.parameter_summary()})
    return model


# ---- fine-tuning (model=from_pretrained, model.lora): kept apart from the size protocol above ----
def with_checkpoint_architecture(config: dict[str, Any]) -> dict[str, Any]:
    """`model=from_pretrained`: a node with `pretrained` and no vision/adaptor/llm takes its parts (and, unless set,
    its image token id) from the checkpoint's config.json; `model.lora` is checked here, before any weights."""
    lora_settings(config.get("lora"))
    source = config.get("pretrained")
    if any(config.get(k) is not None for k in ("vision", "adaptor", "llm")) or source in (None, False, True):
        return config
    from transformers import AutoConfig

    from .hf_interop import config_from_hf

    try:
        hf_config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.pretrained={source!r}: no transformers checkpoint there ({str(exc).splitlines()[0]})") from None
    arch = config_from_hf(hf_config)
    if config.get("image_token_id") is not None:
        arch["image_token_id"] = config["image_token_id"]
    return {**config, **arch}


def _with_lora(model: VisionLanguageModel, node: Any) -> VisionLanguageModel:
    settings = lora_settings(node)
    if settings is None:
        return model
    from .lora import apply_lora

    return apply_lora(model, settings)
