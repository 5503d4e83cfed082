"""Helpers shared by the eval tests (a module, not conftest, so tests can import it by name)."""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from dsvl.cli._config import compose
from dsvl.data.chat import IMAGE_TOKEN


def model_config(preset: str, tokenizer: Any) -> dict[str, Any]:
    """The `model` node of a preset, fitted to the tokenizer (image token id, vocabulary)."""
    cfg = compose([f"model={preset}"])
    node = OmegaConf.to_container(cfg.model, resolve=True)
    node["image_token_id"] = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    node["llm"]["vocab_size"] = len(tokenizer)
    return node
