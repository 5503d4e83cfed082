"""A model's parts from their config nodes (`_target_`s), checked to fit together: the widths the
adaptor must map between, the image token inside the vocabulary. The model class is a parameter so
that loaders below `dsvl.model.vlm` (`hf_interop`) can assemble one without importing it."""
from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

from .cfgutil import instantiate, split_target
from .errors import ConfigError

M = TypeVar("M", bound=nn.Module)


def build_vision(node: Any) -> nn.Module:
    target, kwargs = split_target(node, "model.vision")
    from_config = getattr(target, "from_config", None)
    return from_config(key="model.vision", **kwargs) if from_config else instantiate(node, "model.vision")


def assemble(config: dict[str, Any], model_cls: type[M]) -> M:
    """`model_cls(vision, adaptor, llm, image_token_id)` from the parts' nodes (on the current default
    device), checked to fit together."""
    vision = build_vision(config["vision"])
    llm = instantiate(config["llm"], "model.llm")
    info = getattr(vision, "info", None)
    if info is None:
        raise ConfigError("model.vision must build a module with `info` (widths, token grid), e.g. dsvl.model.vision.VisionEncoder")
    hidden = int(llm.get_input_embeddings().embedding_dim)
    vocab = int(llm.get_input_embeddings().num_embeddings)
    widths = {
        "in_dim": (info.embed_dim, "the vision feature width"),
        "low_in_dim": (info.low.embed_dim if info.low else None, "the low-res (SigLIP) width"),
        "high_in_dim": (info.high.embed_dim if info.high else None, "the high-res (SAM) width"),
        "out_dim": (hidden, "llm hidden_size"),
    }
    adaptor = instantiate(config["adaptor"], "model.adaptor", widths)
    with torch.device("meta"):
        meta_build = all(p.is_meta for p in adaptor.parameters())  # a real build was checked on meta before
        out = adaptor(torch.empty(1, info.num_tokens, info.embed_dim)) if meta_build else None
    if out is not None and out.shape[-1] != hidden:
        raise ConfigError(f"model.adaptor ({type(adaptor).__qualname__}) maps vision features of width {info.embed_dim} "
                          f"to width {out.shape[-1]}, but llm hidden_size is {hidden}; accepted: an adaptor to {hidden}")
    token = config.get("image_token_id")
    if isinstance(token, bool) or not isinstance(token, int):
        raise ConfigError(f"model.image_token_id must be an int (the tokenizer's image token id), got {token!r}")
    if not 0 <= token < vocab:
        raise ConfigError(f"model.image_token_id={token} is outside the LLM vocabulary [0, {vocab}); accepted: a token id of the tokenizer")
    return model_cls(vision, adaptor, llm, token, config=config)
