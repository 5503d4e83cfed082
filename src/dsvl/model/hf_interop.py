"""Interoperability with transformers' `deepseek_vl` and `deepseek_vl_hybrid` checkpoints, both ways: whole modules
move between a transformers model and a dsvl one by `hf_keys.key_map`, so neither way holds two copies of the weights."""
from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, PretrainedConfig
from transformers.utils import is_torchvision_available

from .adaptor import HybridSplitMLPGelu, MLPGelu
from .cfgutil import hf_config_fields
from .errors import ConfigError
from .hf_keys import ARCHITECTURES, DEEPSEEK_VL, architecture_of, key_map
from .llm import causal_lm
from .lora import LoraSettings, adapter_config, merged_lora, quantization_config
from .spec import VisionSpec
from .vision import SamTower, SiglipTower, VisionEncoder

M = TypeVar("M", bound=nn.Module)

log = logging.getLogger(__name__)

# modules QLoRA keeps in full precision (transformers names): only the LLM's linear layers go 4-bit
_FULL_PRECISION = ["vision_model", "high_res_vision_model", "high_res_vision_neck", "high_res_vision_proj", "aligner", "lm_head"]
# transformers config keys that describe the file, not the architecture
_META_KEYS = ("model_type", "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype", "output_attentions", "output_hidden_states", "return_dict")


def to_hf_config(model: nn.Module) -> PretrainedConfig:
    """The transformers config of a dsvl model (DeepseekVLConfig or DeepseekVLHybridConfig)."""
    arch = architecture_of(model)
    text = model.llm.config
    high = {} if arch == DEEPSEEK_VL else {"high_res_vision_config": model.vision.high.model.config.to_dict()}
    config = AutoConfig.for_model(
        arch,
        text_config=text.to_dict(),
        vision_config=model.vision.low.model.config.to_dict(),
        image_token_id=model.image_token_id,
        tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        **high,
    )
    config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForConditionalGeneration"]
    return config


def _plain_hf(config: PretrainedConfig) -> dict[str, Any]:
    """A transformers sub-config as plain keys (what a YAML node would hold): its fields, minus file metadata."""
    known = hf_config_fields(type(config))
    return {k: v for k, v in config.to_dict().items() if k not in _META_KEYS and (known is None or k in known)}


def _hf_parts(config: PretrainedConfig) -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    """The dsvl parts (constructor, keys) equivalent to a transformers DeepSeek-VL config; `config_from_hf` writes them
    as a Hydra node, `load_hf_pretrained` calls them."""
    if config.model_type not in ARCHITECTURES:
        raise ConfigError(f"model_type {config.model_type!r} is not a DeepSeek-VL checkpoint; accepted: {', '.join(ARCHITECTURES)}")
    text = config.text_config
    parts = {"low": (SiglipTower, _plain_hf(config.vision_config)),
             "llm": (causal_lm, {"model_type": text.model_type, **_plain_hf(text), "tie_word_embeddings": bool(config.tie_word_embeddings)})}
    if config.model_type == DEEPSEEK_VL:
        return {**parts, "adaptor": (MLPGelu, {"depth": 2})}
    return {**parts, "high": (SamTower, _plain_hf(config.high_res_vision_config)), "adaptor": (HybridSplitMLPGelu, {})}


def config_from_hf(config: PretrainedConfig) -> dict[str, Any]:
    """The dsvl model node (plain dict with `_target_`s, as `hydra.utils.instantiate` builds it) equivalent to a
    transformers DeepSeek-VL config."""
    def node(name: str, **extra: Any) -> dict[str, Any]:
        target, keys = parts[name]
        return {"_target_": f"{target.__module__}.{target.__qualname__}", **extra, **keys}

    parts = _hf_parts(config)
    vision = {"_target_": f"{VisionEncoder.__module__}.VisionEncoder", "low": node("low")}
    if "high" in parts:
        vision["high"] = node("high", _partial_=True)
    return {"vision": vision, "adaptor": node("adaptor", _partial_=True), "llm": node("llm"),
            "image_token_id": int(config.image_token_id)}


def _model_from_hf(config: PretrainedConfig, model_cls: type[M], image_token_id: int) -> M:
    """`model_cls` built from a transformers DeepSeek-VL config by the plain constructors (on the current device)."""
    parts = {name: functools.partial(target, **keys) for name, (target, keys) in _hf_parts(config).items()}
    return model_cls(VisionEncoder(parts["low"](), parts.get("high")), parts["adaptor"], parts["llm"](), image_token_id)


def _move(dst: nn.Module, dst_name: str, src: nn.Module, src_name: str) -> None:
    """Put `src`'s module (prefix ends in '.') or parameter at `dst_name` in `dst` (the same object, no copy)."""
    if src_name.endswith("."):
        dst.set_submodule(dst_name[:-1], src.get_submodule(src_name[:-1]))
    else:
        parent, _, attr = dst_name.rpartition(".")
        src_parent, _, src_attr = src_name.rpartition(".")
        setattr(dst.get_submodule(parent), attr, getattr(src.get_submodule(src_parent), src_attr))


def _assert_materialised(model: nn.Module, what: str) -> None:
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{what}: {len(left)} tensors were not filled from the checkpoint, e.g. {left[:3]}")


def load_hf_pretrained(
    model_cls: type[M], dir_or_hub_id: str | Path, image_token_id: int | None = None, lora: LoraSettings | None = None,
    adapter: str | Path | None = None, **hf_kwargs: Any
) -> M:
    """A `model_cls` (dsvl's VisionLanguageModel) from a transformers DeepSeek-VL directory or hub id (safetensors,
    no remote code), with `adapter` (a peft directory) merged onto it. transformers loads it (`hf_kwargs` go to its
    `from_pretrained`, default dtype float32; `lora.load_in_4bit` loads the LLM's linear layers in 4-bit); its
    modules are then moved into a dsvl model built on meta."""
    if hf_kwargs.pop("trust_remote_code", False):
        raise ValueError("trust_remote_code is never used: DeepSeek-VL is native in transformers")
    if adapter is not None:
        adapter_config(adapter)  # ConfigError for a directory without an adapter
    hf_kwargs.setdefault("dtype", torch.float32)
    config = AutoConfig.from_pretrained(dir_or_hub_id)
    cfg = config_from_hf(config)  # rejects other model types before any weights load
    quantization = quantization_config(lora, _FULL_PRECISION)
    if quantization is not None:
        hf_kwargs |= {"quantization_config": quantization, "dtype": torch.bfloat16}
    hf = AutoModelForImageTextToText.from_pretrained(dir_or_hub_id, use_safetensors=True, **hf_kwargs)
    source = str(dir_or_hub_id)
    if adapter is not None:
        from peft import PeftModel

        hf = PeftModel.from_pretrained(hf, str(adapter)).merge_and_unload()
        source = f"{dir_or_hub_id} + {adapter}"
    if image_token_id is not None:
        cfg["image_token_id"] = int(image_token_id)
    with torch.device("meta"):
        model = _model_from_hf(config, model_cls, cfg["image_token_id"])
    for hf_name, dsvl_name in key_map(config.model_type, model.llm.base_model_prefix):
        _move(model, dsvl_name, hf, hf_name)
    _assert_materialised(model, f"loading {source}")
    model.llm.generation_config = copy.deepcopy(hf.generation_config)
    model.config = cfg
    log.info("loaded %s (%s) into dsvl", source, config.model_type)
    return model


def hf_image_processor(spec: VisionSpec) -> Any:
    """transformers' DeepSeek-VL image processor set to a model's sizes and normalisation (resize longest side, pad
    square): the torchvision backend when torchvision is installed, else the PIL one (same outputs)."""
    import transformers

    suffix = "" if is_torchvision_available() else "Pil"  # importing the class without its backend only warns
    single = getattr(transformers, f"DeepseekVLImageProcessor{suffix}")
    hybrid = getattr(transformers, f"DeepseekVLHybridImageProcessor{suffix}")
    low, high = spec.input("pixel_values"), spec.input("high_res_pixel_values")
    if low is None:
        raise ConfigError("transformers' DeepSeek-VL image processors need a low-res (pixel_values) input")
    common = dict(size={"height": low.size, "width": low.size}, image_mean=list(low.mean), image_std=list(low.std))
    if high is None:
        return single(**common)
    return hybrid(
        **common,
        high_res_size={"height": high.size, "width": high.size},
        high_res_image_mean=list(high.mean),
        high_res_image_std=list(high.std),
    )


def save_hf_pretrained(model: nn.Module, save_directory: str | Path, **hf_kwargs: Any) -> None:
    """Write `model` as a transformers DeepSeek-VL directory (config, safetensors, generation and image-processor
    configs); the transformers model is built on meta and borrows the dsvl modules, so nothing is copied."""
    config = to_hf_config(model)  # ConfigError before anything is written
    arch = config.model_type
    with merged_lora(model):  # LoRA adapters folded into the weights for the export, restored after
        with torch.device("meta"):
            hf = AutoModelForImageTextToText.from_config(config)
        for hf_name, dsvl_name in key_map(arch, model.llm.base_model_prefix):
            _move(hf, hf_name, model, dsvl_name)
        _assert_materialised(hf, "export")
        hf.config.dtype = next(model.llm.parameters()).dtype
        hf.generation_config = copy.deepcopy(model.llm.generation_config)
        hf.save_pretrained(save_directory, **hf_kwargs)
    hf_image_processor(model.vision_spec).save_pretrained(save_directory)
    log.info("saved %s checkpoint to %s", arch, save_directory)
