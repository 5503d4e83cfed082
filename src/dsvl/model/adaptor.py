"""Vision-language adaptors: map vision features (N, T, in) to LLM embeddings (N, T, d).

Each class resolves its widths from the vision side and the LLM (`resolve`), so presets do not
hand-copy widths, and an explicitly wrong width fails with a one-line `ConfigError`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import ConfigError


def _fit(key: str, given: int | None, expected: int, source: str) -> int:
    """`given` if it equals `expected` (or is unset), else a clear error naming both."""
    if given is None:
        return expected
    if int(given) != expected:
        raise ConfigError(f"{key}={given} does not match {source} ({expected}); accepted: {expected} or null (derived)")
    return expected


class LinearAdaptor(nn.Module):
    """A single Linear(in -> d)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    @classmethod
    def resolve(
        cls, key: str, vision: Any, llm_hidden: int, in_dim: int | None = None, out_dim: int | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Widths from the vision side (`vision`: a VisionInfo) and the LLM; kwargs are unknown keys."""
        if kwargs:
            raise ConfigError(f"{key}: unknown keys {sorted(kwargs)} for {cls.__name__}; accepted: in_dim, out_dim")
        return {
            "in_dim": _fit(f"{key}.in_dim", in_dim, vision.embed_dim, "the vision feature width"),
            "out_dim": _fit(f"{key}.out_dim", out_dim, llm_hidden, "llm hidden_size"),
        }

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class MLPGelu(nn.Module):
    """Linear(in -> d), then (GELU, Linear(d -> d)) x (depth - 1): DeepSeek-VL's `mlp_gelu` projector."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"adaptor.depth={depth} must be >= 1")
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.layers = nn.Sequential(*layers)
        self.depth = depth

    @classmethod
    def resolve(
        cls,
        key: str,
        vision: Any,
        llm_hidden: int,
        in_dim: int | None = None,
        out_dim: int | None = None,
        depth: int = 2,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Widths from the vision side and the LLM; depth as configured."""
        if kwargs:
            raise ConfigError(f"{key}: unknown keys {sorted(kwargs)} for {cls.__name__}; accepted: in_dim, out_dim, depth")
        if int(depth) < 1:
            raise ConfigError(f"{key}.depth={depth}; accepted: an int >= 1")
        return {
            "in_dim": _fit(f"{key}.in_dim", in_dim, vision.embed_dim, "the vision feature width"),
            "out_dim": _fit(f"{key}.out_dim", out_dim, llm_hidden, "llm hidden_size"),
            "depth": int(depth),
        }

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class HybridSplitMLPGelu(nn.Module):
    """DeepSeek-VL-7B's `low_high_hybrid_split_mlp_gelu`: per-encoder Linear to d/2, concat [high, low], GELU, Linear(d, d).

    Reads the hybrid tower's joined features: the first `high_in_dim` channels are SAM's, the rest SigLIP's.
    """

    def __init__(self, low_in_dim: int, high_in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim % 2:
            raise ConfigError(f"adaptor.out_dim={out_dim} must be even (split in two halves)")
        self.high_in_dim = high_in_dim
        self.high_proj = nn.Linear(high_in_dim, out_dim // 2)
        self.low_proj = nn.Linear(low_in_dim, out_dim // 2)
        self.act = nn.GELU()
        self.proj = nn.Linear(out_dim, out_dim)

    @classmethod
    def resolve(
        cls,
        key: str,
        vision: Any,
        llm_hidden: int,
        low_in_dim: int | None = None,
        high_in_dim: int | None = None,
        out_dim: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Needs both towers: each half reads one of them."""
        if vision.low is None or vision.high is None:
            raise ConfigError(
                f"{key}: hybrid_split_mlp_gelu needs a hybrid vision tower (vision.low and vision.high); "
                f"accepted vision presets: hybrid_siglip_sam, tiny_hybrid"
            )
        if kwargs:
            raise ConfigError(
                f"{key}: unknown keys {sorted(kwargs)} for {cls.__name__}; accepted: low_in_dim, high_in_dim, out_dim"
            )
        out = _fit(f"{key}.out_dim", out_dim, llm_hidden, "llm hidden_size")
        if out % 2:
            raise ConfigError(f"{key}.out_dim={out} must be even (two halves of d/2)")
        return {
            "low_in_dim": _fit(f"{key}.low_in_dim", low_in_dim, vision.low.embed_dim, "the low-res (SigLIP) width"),
            "high_in_dim": _fit(f"{key}.high_in_dim", high_in_dim, vision.high.embed_dim, "the high-res (SAM) width"),
            "out_dim": out,
        }

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        high, low = features[..., : self.high_in_dim], features[..., self.high_in_dim :]
        joined = torch.cat([self.high_proj(high), self.low_proj(low)], dim=-1)
        return self.proj(self.act(joined))
