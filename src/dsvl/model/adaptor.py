"""Vision-language adaptors: map vision features (N, T, in) to LLM embeddings (N, T, d). Plain constructors taking
widths: `VisionLanguageModel` builds one given as a factory (Hydra's `_partial_: true`) with its parts' widths."""
from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError


class LinearAdaptor(nn.Module):
    """A single Linear(in -> d)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class MLPGelu(nn.Module):
    """Linear(in -> d), then (GELU, Linear(d -> d)) x (depth - 1): DeepSeek-VL's `mlp_gelu` projector."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"depth={depth}; accepted: an int >= 1")
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.layers = nn.Sequential(*layers)
        self.depth = depth

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class HybridSplitMLPGelu(nn.Module):
    """DeepSeek-VL-7B's `low_high_hybrid_split_mlp_gelu`: per-encoder Linear to d/2, concat [high, low], GELU, Linear(d, d),
    on the hybrid tower's joined features (the first `high_in_dim` channels are SAM's, the rest SigLIP's)."""

    def __init__(self, low_in_dim: int, high_in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim % 2:
            raise ConfigError(f"out_dim={out_dim} must be even (two halves of out_dim / 2)")
        self.high_in_dim = high_in_dim
        self.high_proj = nn.Linear(high_in_dim, out_dim // 2)
        self.low_proj = nn.Linear(low_in_dim, out_dim // 2)
        self.act = nn.GELU()
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        high, low = features[..., : self.high_in_dim], features[..., self.high_in_dim :]
        joined = torch.cat([self.high_proj(high), self.low_proj(low)], dim=-1)
        return self.proj(self.act(joined))
