"""Vision towers: transformers' SigLIP and SAM models plus DeepSeek-VL's SAM downsampling path.

Each tower declares its sizes without building weights (`describe`), so configs are checked and
the data pipeline learns image sizes before anything heavy happens (DESIGN.md principle 6).
`VisionEncoder` holds the low-res (SigLIP) and/or high-res (SAM) tower and joins their features
along the embedding dimension as [high, low], the order DeepSeek-VL's hybrid adaptor splits.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import SamVisionConfig, SamVisionModel, SiglipVisionConfig, SiglipVisionModel
from transformers.models.deepseek_vl_hybrid.modeling_deepseek_vl_hybrid import (
    DeepseekVLSamVisionNeck,
    DeepseekVLSamVisionProj,
)

from .checked_load import from_pretrained_checked
from .cfgutil import describe_node, make_hf_config, split_target
from .errors import ConfigError
from .spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec

log = logging.getLogger(__name__)

LOW_RES_INPUT = "pixel_values"
HIGH_RES_INPUT = "high_res_pixel_values"


@dataclass(frozen=True)
class TowerInfo:
    """Sizes of one tower: feature width, token grid side (tokens = grid**2) and its image input."""

    embed_dim: int
    grid: int
    input: ImageInputSpec

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid


@dataclass(frozen=True)
class VisionInfo:
    """Sizes of the whole vision side: joined feature width, tokens per image, each tower's info."""

    low: TowerInfo | None
    high: TowerInfo | None

    @property
    def embed_dim(self) -> int:
        return sum(t.embed_dim for t in (self.high, self.low) if t is not None)

    @property
    def num_tokens(self) -> int:
        return (self.low or self.high).num_tokens  # type: ignore[union-attr]

    @property
    def spec(self) -> VisionSpec:
        return VisionSpec(
            inputs=tuple(t.input for t in (self.low, self.high) if t is not None), num_image_tokens=self.num_tokens
        )


def _side(value: Any, key: str) -> int:
    """A square size from an int or an (h, w) pair; non-square inputs are not supported by DeepSeek-VL."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ConfigError(f"{key} must be one int or a square pair, got {value!r}")
        value = value[0]
    return int(value)


def _source(pretrained: Any, hub_id: str | None, key: str) -> str | None:
    """Where to load weights from: None (random init), True (the preset's hub_id) or a path / hub id."""
    if pretrained in (None, False):
        return None
    if pretrained is True:
        if not hub_id:
            raise ConfigError(f"{key}.pretrained=true needs {key}.hub_id; accepted: a hub id or a local directory")
        return hub_id
    return str(pretrained)


class SiglipTower(nn.Module):
    """Low-res semantic branch: transformers' `SiglipVisionModel`, its last hidden state as features.

    The pooling head is off by default (DeepSeek-VL does not use it; unused weights would also
    trip DDP's unused-parameter check).
    """

    input_name = LOW_RES_INPUT

    def __init__(
        self,
        *,
        pretrained: Any = None,
        hub_id: str | None = None,
        mean: tuple[float, float, float] = SIGLIP_MEAN,
        std: tuple[float, float, float] = SIGLIP_STD,
        config: SiglipVisionConfig | None = None,
        **hf_config: Any,
    ) -> None:
        super().__init__()
        hf_config.setdefault("vision_use_head", False)
        src = _source(pretrained, hub_id, "vision.low")
        if src is not None:
            log.info("SigLIP tower: loading weights from %s", src)
            self.model = from_pretrained_checked(SiglipVisionModel, src, "vision.low", **hf_config)
        else:
            self.model = SiglipVisionModel(config if config is not None else make_hf_config(SiglipVisionConfig, "vision.low", **hf_config))
        self.mean, self.std = tuple(mean), tuple(std)
        self.info = self.describe(key="vision.low", config=self.model.config, mean=self.mean, std=self.std)

    @classmethod
    def describe(
        cls,
        *,
        key: str = "vision.low",
        pretrained: Any = None,
        hub_id: str | None = None,
        mean: tuple[float, float, float] = SIGLIP_MEAN,
        std: tuple[float, float, float] = SIGLIP_STD,
        config: SiglipVisionConfig | None = None,
        **hf_config: Any,
    ) -> TowerInfo:
        """Sizes from the config alone (no weights)."""
        hf_config.setdefault("vision_use_head", False)
        cfg = config if config is not None else make_hf_config(SiglipVisionConfig, key, **hf_config)
        size, patch = _side(cfg.image_size, f"{key}.image_size"), _side(cfg.patch_size, f"{key}.patch_size")
        if size % patch:
            raise ConfigError(f"{key}.image_size={size} must be a multiple of {key}.patch_size={patch}")
        return TowerInfo(cfg.hidden_size, size // patch, ImageInputSpec(cls.input_name, size, tuple(mean), tuple(std)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, grid**2, hidden)."""
        return self.model(pixel_values=pixel_values.to(self.model.dtype)).last_hidden_state


class SamTower(nn.Module):
    """High-res detail branch: transformers' `SamVisionModel` plus DeepSeek-VL's downsampling.

    As `DeepseekVLHybridModel.get_high_res_image_features`: the SAM neck output is interpolated to
    4*grid and brought down by two stride-2 convs (C -> 2C -> 4C channels, grid x grid); a second
    neck over the hidden state of the first global-attention block goes through the same convs
    and is added, scaled by `alpha` (learnable, initialised to 0).
    """

    input_name = HIGH_RES_INPUT

    def __init__(
        self,
        *,
        grid: int | None = None,
        pretrained: Any = None,
        hub_id: str | None = None,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        config: SamVisionConfig | None = None,
        **hf_config: Any,
    ) -> None:
        super().__init__()
        src = _source(pretrained, hub_id, "vision.high")
        if src is not None:
            log.info("SAM tower: loading weights from %s", src)
            self.model = from_pretrained_checked(SamVisionModel, src, "vision.high", **hf_config)
        else:
            self.model = SamVisionModel(config if config is not None else make_hf_config(SamVisionConfig, "vision.high", **hf_config))
        cfg = self.model.config
        self.mean, self.std = tuple(mean), tuple(std)
        self.info = self.describe(key="vision.high", grid=grid, config=cfg, mean=self.mean, std=self.std)
        self.global_attn_index = int(cfg.global_attn_indexes[0])
        self.global_neck = DeepseekVLSamVisionNeck(cfg)
        self.proj = DeepseekVLSamVisionProj(cfg, output_size=self.info.grid)
        self.alpha = nn.Parameter(torch.zeros(1))
        for module in (*self.global_neck.modules(), *self.proj.modules()):
            if isinstance(module, nn.Conv2d):  # transformers' DeepseekVLHybrid init for these convs
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @classmethod
    def describe(
        cls,
        *,
        key: str = "vision.high",
        grid: int | None = None,
        low_grid: int | None = None,
        pretrained: Any = None,
        hub_id: str | None = None,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        config: SamVisionConfig | None = None,
        **hf_config: Any,
    ) -> TowerInfo:
        """Sizes from the config alone; `grid` defaults to the SigLIP grid in a hybrid, else the SAM map / 4."""
        cfg = config if config is not None else make_hf_config(SamVisionConfig, key, **hf_config)
        size, patch = _side(cfg.image_size, f"{key}.image_size"), _side(cfg.patch_size, f"{key}.patch_size")
        if size % patch:
            raise ConfigError(f"{key}.image_size={size} must be a multiple of {key}.patch_size={patch}")
        if not cfg.global_attn_indexes:
            raise ConfigError(f"{key}.global_attn_indexes must name at least one block (DeepSeek-VL taps the first)")
        if grid is None:
            grid = low_grid if low_grid is not None else max(1, (size // patch) // 4)
        elif low_grid is not None and grid != low_grid:
            raise ConfigError(
                f"{key}.grid={grid} does not match the SigLIP grid {low_grid} (vision.low image_size / patch_size); "
                f"accepted: {low_grid} or null (derived)"
            )
        return TowerInfo(cfg.output_channels * 4, int(grid), ImageInputSpec(cls.input_name, size, tuple(mean), tuple(std)))

    def forward(self, high_res_pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, grid**2, 4 * output_channels)."""
        out = self.model(pixel_values=high_res_pixel_values.to(self.model.dtype), output_hidden_states=True)
        features = self.proj(out.last_hidden_state)
        tapped = out.hidden_states[self.global_attn_index + 1]  # +1: hidden_states[0] is the patch embedding
        features = features + self.proj(self.global_neck(tapped)) * self.alpha
        return features.flatten(2).transpose(1, 2)


class VisionEncoder(nn.Module):
    """The vision side: `low` (SigLIP-like) and/or `high` (SAM-like) tower; features joined as [high, low]."""

    def __init__(self, low: nn.Module | None = None, high: nn.Module | None = None) -> None:
        super().__init__()
        if low is None and high is None:
            raise ConfigError("vision needs at least one tower; accepted: vision.low and/or vision.high")
        self.low, self.high = low, high
        self.info = VisionInfo(low=getattr(low, "info", None), high=getattr(high, "info", None))
        if self.info.low and self.info.high and self.info.low.grid != self.info.high.grid:
            raise ConfigError(
                f"vision.high grid {self.info.high.grid} != vision.low grid {self.info.low.grid}; "
                "build with dsvl.model.build_model (derives it) or set vision.high.grid"
            )

    @classmethod
    def describe(cls, *, key: str = "vision", low: Any = None, high: Any = None) -> VisionInfo:
        """Sizes of both towers, checking that they agree on the token grid."""
        if low is None and high is None:
            raise ConfigError(f"{key} needs at least one tower; accepted: {key}.low and/or {key}.high nodes")
        low_info = describe_node(low, f"{key}.low")[2] if low is not None else None
        high_info = (
            describe_node(high, f"{key}.high", low_grid=low_info.grid if low_info else None)[2] if high is not None else None
        )
        if low_info and high_info and low_info.num_tokens != high_info.num_tokens:
            raise ConfigError(f"{key}: low tower gives {low_info.num_tokens} tokens but high gives {high_info.num_tokens}")
        return VisionInfo(low=low_info, high=high_info)

    @classmethod
    def from_config(cls, *, key: str = "vision", low: Any = None, high: Any = None) -> "VisionEncoder":
        """Build both towers from their `_target_` nodes (the SAM grid derived from SigLIP's when unset)."""
        info = cls.describe(key=key, low=low, high=high)
        towers: dict[str, nn.Module | None] = {"low": None, "high": None}
        for name, node, tower_info in (("low", low, info.low), ("high", high, info.high)):
            if node is None:
                continue
            target, kwargs = split_target(node, f"{key}.{name}")
            if "grid" in inspect.signature(target.describe).parameters:
                kwargs["grid"] = tower_info.grid  # type: ignore[union-attr]
            towers[name] = target(**kwargs)
        return cls(**towers)

    @property
    def spec(self) -> VisionSpec:
        return self.info.spec

    def forward(
        self, pixel_values: torch.Tensor | None = None, high_res_pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images -> (N, tokens, embed_dim); each tower reads its own input (transformers' names)."""
        features = []
        for tower, pixels in ((self.high, high_res_pixel_values), (self.low, pixel_values)):
            if tower is None:
                continue
            if pixels is None:
                raise ValueError(f"this model's vision side needs `{tower.input_name}` (one entry per image)")
            features.append(tower(pixels))
        if len({f.shape[0] for f in features}) > 1:
            raise ValueError(f"pixel_values and high_res_pixel_values disagree on the number of images: {[f.shape[0] for f in features]}")
        return features[0] if len(features) == 1 else torch.cat(features, dim=-1)
