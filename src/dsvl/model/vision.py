"""Vision towers: any transformers patch encoder by `model_type` (SigLIP in DeepSeek-VL) and transformers' SAM plus
DeepSeek-VL's SAM downsampling path. Each tower works out its sizes (`info`) in its constructor, so a meta build learns
them; `VisionEncoder` joins features as [high, low]."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, SamVisionConfig, SamVisionModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.models.deepseek_vl_hybrid.modeling_deepseek_vl_hybrid import (
    DeepseekVLSamVisionNeck,
    DeepseekVLSamVisionProj,
)

from .checked_load import from_pretrained_checked
from .cfgutil import complete, hf_config_fields, make_hf_config
from .errors import ConfigError
from .spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec


@dataclass(frozen=True)
class TowerInfo:
    """Sizes of one tower: feature width, token grid side (tokens = grid**2) and its image input."""

    embed_dim: int
    grid: int
    input: ImageInputSpec


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
        return (self.low or self.high).grid ** 2  # type: ignore[union-attr]

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


def _encoder_config_class(model_type: str) -> type:
    """transformers' config class of a `model_type`, checked to be a patch encoder's with a base model (`AutoModel`);
    a whole model's (e.g. 'clip') has its sizes in a vision_config instead."""
    accepted = "accepted e.g. 'siglip_vision_model', 'clip_vision_model', 'dinov2'"
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"model_type={model_type!r} is not a transformers model type; {accepted}")
    config_cls = CONFIG_MAPPING[model_type]
    missing = sorted({"image_size", "patch_size", "hidden_size"} - (hf_config_fields(config_cls) or set()))
    if missing or config_cls not in MODEL_MAPPING:
        raise ConfigError(f"model_type={model_type!r} is not a vision encoder's (no {', '.join(missing) or 'AutoModel'}); {accepted}")
    return config_cls


def _grid(cfg: Any) -> int:
    """Patches per image side of a transformers vision config (checked: the image is a whole number of patches)."""
    size, patch = _side(cfg.image_size, "image_size"), _side(cfg.patch_size, "patch_size")
    if size % patch:
        raise ConfigError(f"image_size={size} must be a multiple of patch_size={patch}")
    return size // patch


class AutoVisionTower(nn.Module):
    """Low-res semantic branch: any transformers vision encoder whose `last_hidden_state` holds one token per patch
    (SigLIP, CLIP, DINOv2, ViT, ...), picked by its config's `model_type` as transformers' own VLMs pick theirs
    (`AutoModel.from_config(config.vision_config)`). Features: the last grid**2 tokens (CLIP and DINOv2 put a CLS
    token, and register tokens, before the patches). A pooling head that has a config switch (SigLIP's
    `vision_use_head`) is off by default: DeepSeek-VL does not use it, and unused weights would trip DDP's
    unused-parameter check."""

    input_name = "pixel_values"

    def __init__(
        self,
        *,
        model_type: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        pretrained: Any = None,
        hub_id: str | None = None,
        **hf_config: Any,
    ) -> None:
        super().__init__()
        config_cls = _encoder_config_class(model_type)
        if "vision_use_head" in (hf_config_fields(config_cls) or ()):
            hf_config.setdefault("vision_use_head", False)
        config = make_hf_config(config_cls, **hf_config)
        _grid(config)  # checked before building anything
        # the exact class (SiglipVisionModel), not AutoModel: that would load a whole SiglipModel from its checkpoint
        self.model = from_pretrained_checked(MODEL_MAPPING[config_cls], "vision.low", pretrained, hub_id, **hf_config) \
            or AutoModel.from_config(config)
        cfg = self.model.config
        size = _side(cfg.image_size, "image_size")
        self.info = TowerInfo(cfg.hidden_size, _grid(cfg), ImageInputSpec(self.input_name, size, tuple(mean), tuple(std)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, grid**2, hidden): the patch tokens, without the CLS / register tokens before them."""
        hidden = self.model(pixel_values=pixel_values.to(self.model.dtype)).last_hidden_state
        patches = self.info.grid ** 2
        if hidden.dim() != 3 or hidden.shape[1] < patches:  # e.g. a feature map, or MAE's masked subset of patches
            raise ConfigError(f"vision.low: {self.model.config.model_type!r} returns shape {tuple(hidden.shape)}, not "
                              f"(N, >= {patches} patches, width); accepted: encoders with one output token per patch")
        return hidden[:, -patches:]


class SiglipTower(AutoVisionTower):
    """transformers' `SiglipVisionModel` with SigLIP's normalisation: DeepSeek-VL's low-res tower, the one `hf_interop`
    maps to and from DeepSeek-VL checkpoints."""

    def __init__(
        self,
        *,
        mean: tuple[float, float, float] = SIGLIP_MEAN,
        std: tuple[float, float, float] = SIGLIP_STD,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_type="siglip_vision_model", mean=mean, std=std, **kwargs)


class SamTower(nn.Module):
    """High-res detail branch: transformers' `SamVisionModel` plus DeepSeek-VL's downsampling, as
    `DeepseekVLHybridModel.get_high_res_image_features`: the neck output goes through two stride-2 convs (to 4C
    channels, grid x grid), plus a second neck over the first global-attention block's output, scaled by `alpha`."""

    input_name = "high_res_pixel_values"

    def __init__(
        self,
        *,
        grid: int | None = None,
        pretrained: Any = None,
        hub_id: str | None = None,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        **hf_config: Any,
    ) -> None:
        super().__init__()
        self.model = from_pretrained_checked(SamVisionModel, "vision.high", pretrained, hub_id, **hf_config) \
            or SamVisionModel(make_hf_config(SamVisionConfig, **hf_config))
        cfg = self.model.config
        if not cfg.global_attn_indexes:
            raise ConfigError("global_attn_indexes must name at least one block (DeepSeek-VL taps the first)")
        grid = int(grid) if grid is not None else max(1, _grid(cfg) // 4)
        size = _side(cfg.image_size, "image_size")
        self.info = TowerInfo(cfg.output_channels * 4, grid, ImageInputSpec(self.input_name, size, tuple(mean), tuple(std)))
        self.global_attn_index = int(cfg.global_attn_indexes[0])
        self.global_neck = DeepseekVLSamVisionNeck(cfg)
        self.proj = DeepseekVLSamVisionProj(cfg, output_size=grid)
        self.alpha = nn.Parameter(torch.zeros(1))
        for module in (*self.global_neck.modules(), *self.proj.modules()):
            if isinstance(module, nn.Conv2d):
                self._init_weights(module)

    def _init_weights(self, module: nn.Module) -> None:
        """Init of what lies outside transformers' SAM (neck, convs, `alpha`), as transformers' DeepseekVLHybrid does;
        `dsvl.model.materialize` calls it for those modules as it calls transformers' `_init_weights` for the rest."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, SamTower):
            nn.init.zeros_(module.alpha)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()

    def forward(self, high_res_pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, grid**2, 4 * output_channels)."""
        out = self.model(pixel_values=high_res_pixel_values.to(self.model.dtype), output_hidden_states=True)
        features = self.proj(out.last_hidden_state)
        tapped = out.hidden_states[self.global_attn_index + 1]  # +1: hidden_states[0] is the patch embedding
        features = features + self.proj(self.global_neck(tapped)) * self.alpha
        return features.flatten(2).transpose(1, 2)


class VisionEncoder(nn.Module):
    """The vision side: `low` (SigLIP-like) and/or `high` (SAM-like) tower; features joined as [high, low]. `high` may
    be a factory (Hydra's `_partial_: true`): it is then built with the low-res tower's grid unless it sets one."""

    def __init__(self, low: nn.Module | None = None, high: Any = None) -> None:
        super().__init__()
        if low is None and high is None:
            raise ConfigError("vision needs at least one tower; accepted: vision.low and/or vision.high")
        grid = getattr(low, "info", None) and low.info.grid
        high = complete(high, "model.vision.high", {"grid": (grid, "the low-res tower's grid")} if grid else {})
        self.low, self.high = low, high
        self.info = VisionInfo(low=getattr(low, "info", None), high=getattr(high, "info", None))
        if self.info.low and self.info.high and self.info.low.grid != self.info.high.grid:
            raise ConfigError(f"vision.high grid {self.info.high.grid} != vision.low grid {self.info.low.grid}; "
                              "accepted: vision.high.grid null (derived) with vision.high._partial_: true")

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
