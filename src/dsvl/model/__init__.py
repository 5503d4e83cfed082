"""dsvl.model: the shared core (vision towers, adaptors, the VL model, transformers import/export). Plain PyTorch +
transformers; never imports Lightning or Hydra: a model's parts are plain constructors (`dsvl.cli.models` builds them
from the Hydra `model` node with `hydra.utils.instantiate`)."""
from .adaptor import HybridSplitMLPGelu, LinearAdaptor, MLPGelu
from .build import weight_sources
from .errors import ConfigError
from .hf_interop import config_from_hf, hf_image_processor, to_hf_config
from .llm import causal_lm
from .materialize import WeightSource, materialize
from .spec import ImageInputSpec, VisionSpec
from .vision import AutoVisionTower, SamTower, SiglipTower, VisionEncoder
from .vlm import VisionLanguageModel, VLMOutput, next_token_loss

__all__ = [
    "AutoVisionTower",
    "ConfigError",
    "HybridSplitMLPGelu",
    "ImageInputSpec",
    "LinearAdaptor",
    "MLPGelu",
    "SamTower",
    "SiglipTower",
    "VLMOutput",
    "VisionEncoder",
    "VisionLanguageModel",
    "VisionSpec",
    "config_from_hf",
    "hf_image_processor",
    "to_hf_config",
    "causal_lm",
    "next_token_loss",
    "WeightSource",
    "materialize",
    "weight_sources",
]
