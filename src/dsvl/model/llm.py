"""The language model: any transformers `AutoModelForCausalLM` (DeepSeek-LLM is Llama), built from config keys."""
from __future__ import annotations

from typing import Any

from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .cfgutil import make_hf_config
from .checked_load import from_pretrained_checked
from .errors import ConfigError


def causal_lm(
    *,
    model_type: str = "llama",
    pretrained: Any = None,
    hub_id: str | None = None,
    config: PretrainedConfig | None = None,
    **hf_config: Any,
) -> PreTrainedModel:
    """`AutoModelForCausalLM` from config keys (random init), or from `pretrained` (True = `hub_id`, or a path / hub id)."""
    model = from_pretrained_checked(AutoModelForCausalLM, "llm", pretrained, hub_id, **hf_config)
    if model is not None:
        return model
    if config is None:
        if model_type not in CONFIG_MAPPING:
            raise ConfigError(f"model_type={model_type!r} is not a transformers model type; accepted e.g. 'llama', 'qwen2'")
        config = make_hf_config(CONFIG_MAPPING[model_type], **hf_config)
    return AutoModelForCausalLM.from_config(config)
