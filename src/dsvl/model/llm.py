"""The language model: any transformers `AutoModelForCausalLM` (DeepSeek-LLM is Llama), built from config keys."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .cfgutil import make_hf_config
from .checked_load import from_pretrained_checked
from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMInfo:
    """What the rest of the model needs to know about the LLM: width and vocabulary size."""

    hidden_size: int
    vocab_size: int
    config: PretrainedConfig


def _hf_config(key: str, model_type: str, config: PretrainedConfig | None, hf_config: dict[str, Any]) -> PretrainedConfig:
    if config is not None:
        return config
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"{key}.model_type={model_type!r} is not a transformers model type; accepted e.g. 'llama', 'qwen2'")
    return make_hf_config(CONFIG_MAPPING[model_type], key, **hf_config)


def describe_causal_lm(
    *,
    key: str = "llm",
    model_type: str = "llama",
    pretrained: Any = None,
    hub_id: str | None = None,
    config: PretrainedConfig | None = None,
    **hf_config: Any,
) -> LLMInfo:
    """Sizes from the config alone (no weights). With `pretrained`, the YAML sizes must describe that checkpoint."""
    cfg = _hf_config(key, model_type, config, hf_config)
    return LLMInfo(hidden_size=int(cfg.hidden_size), vocab_size=int(cfg.vocab_size), config=cfg)


def causal_lm(
    *,
    model_type: str = "llama",
    pretrained: Any = None,
    hub_id: str | None = None,
    config: PretrainedConfig | None = None,
    **hf_config: Any,
) -> PreTrainedModel:
    """`AutoModelForCausalLM` from config keys (random init), or from `pretrained` (True = `hub_id`, or a path / hub id)."""
    if pretrained not in (None, False):
        src = hub_id if pretrained is True else str(pretrained)
        if not src:
            raise ConfigError("llm.pretrained=true needs llm.hub_id; accepted: a hub id or a local directory")
        log.info("LLM: loading weights from %s", src)
        return from_pretrained_checked(AutoModelForCausalLM, src, "llm", **hf_config)
    return AutoModelForCausalLM.from_config(_hf_config("llm", model_type, config, hf_config))


causal_lm.describe = describe_causal_lm  # type: ignore[attr-defined]  # build_model's size protocol
