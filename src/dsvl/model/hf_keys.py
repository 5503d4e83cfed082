"""Which transformers `deepseek_vl` / `deepseek_vl_hybrid` prefix holds which dsvl part; apart from `hf_interop`
because LoRA adapters, sharded loads and exports need the names without the loaders."""
from __future__ import annotations

from torch import nn

from .adaptor import HybridSplitMLPGelu, MLPGelu
from .errors import ConfigError
from .vision import SamTower, SiglipTower

DEEPSEEK_VL = "deepseek_vl"
DEEPSEEK_VL_HYBRID = "deepseek_vl_hybrid"
ARCHITECTURES = (DEEPSEEK_VL, DEEPSEEK_VL_HYBRID)


def key_map(arch: str, llm_prefix: str = "model") -> list[tuple[str, str]]:
    """(transformers prefix, dsvl prefix) pairs; a prefix ending in '.' is a module, otherwise a single parameter.
    `llm_prefix`: the LLM's `base_model_prefix` (the inner model that is transformers' `language_model`)."""
    common = [
        ("model.vision_model.", "vision.low.model."),
        ("model.language_model.", f"llm.{llm_prefix}."),
        ("lm_head.", "llm.lm_head."),
    ]
    if arch == DEEPSEEK_VL:
        return common + [("model.aligner.linear1.", "adaptor.layers.0."), ("model.aligner.linear2.", "adaptor.layers.2.")]
    if arch == DEEPSEEK_VL_HYBRID:
        return common + [
            ("model.high_res_vision_model.", "vision.high.model."),
            ("model.high_res_vision_neck.", "vision.high.global_neck."),
            ("model.high_res_vision_proj.", "vision.high.proj."),
            ("model.high_res_vision_alpha", "vision.high.alpha"),
            ("model.aligner.vision_proj.", "adaptor.low_proj."),
            ("model.aligner.high_res_vision_proj.", "adaptor.high_proj."),
            ("model.aligner.proj.", "adaptor.proj."),
        ]
    raise ConfigError(f"unknown transformers architecture {arch!r}; accepted: {', '.join(ARCHITECTURES)}")


def architecture_of(model: nn.Module) -> str:
    """Which transformers architecture the model's parts match; ConfigError naming the part that has none."""
    low, high, adaptor = model.vision.low, model.vision.high, model.adaptor
    if not isinstance(low, SiglipTower):
        raise ConfigError("no transformers counterpart: DeepSeek-VL checkpoints need a SigLIP low-res tower (vision.low)")
    if high is None:
        if isinstance(adaptor, MLPGelu) and adaptor.depth == 2:
            return DEEPSEEK_VL
        depth = f" depth {adaptor.depth}" if isinstance(adaptor, MLPGelu) else ""
        raise ConfigError(f"no transformers counterpart for adaptor {type(adaptor).__name__}{depth} with a SigLIP-only tower; "
                          "accepted: mlp_gelu depth 2")
    if isinstance(high, SamTower) and isinstance(adaptor, HybridSplitMLPGelu):
        return DEEPSEEK_VL_HYBRID
    raise ConfigError(f"no transformers counterpart for vision.high={type(high).__name__} with adaptor "
                      f"{type(adaptor).__name__}; accepted: SamTower + hybrid_split_mlp_gelu")
