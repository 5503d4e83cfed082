"""The weights a `model` config node asks for, for a model its parts were built from (by `hydra.utils.instantiate`, in
`dsvl.cli.models`): the node checked and completed from a checkpoint's config.json, its `pretrained` switched off for
the meta build, and where the weights come from (a whole DeepSeek-VL checkpoint, or each part's own)."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cfgutil import to_plain
from .checked_load import weights_source
from .errors import ConfigError
from .hf_keys import key_map
from .lora import LoraSettings, lora_settings
from .materialize import WeightSource
from .vlm import VisionLanguageModel

log = logging.getLogger(__name__)


def model_node(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A `model` config node (DictConfig or dict) as a plain dict, its parts taken from the checkpoint's config.json
    for `model=from_pretrained`, checked to have vision, adaptor and llm."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model config must be a mapping with vision, adaptor, llm; got {type(cfg).__name__}")
    config = with_checkpoint_architecture(to_plain(cfg))
    missing = [k for k in ("vision", "adaptor", "llm") if config.get(k) is None]
    if missing:
        raise ConfigError(f"model config lacks {missing}; accepted: a node with vision, adaptor, llm (e.g. model=tiny)")
    return config


def without_weights(node: Any) -> Any:
    """A part node with its `pretrained` switched off: the meta build checks the YAML sizes, which must describe it."""
    if isinstance(node, dict):
        return {k: None if k == "pretrained" else without_weights(v) for k, v in node.items()}
    return node


def whole_pretrained(config: Mapping[str, Any]) -> str | None:
    """The whole-model checkpoint (`pretrained`: True = `hub_id`, or a path / hub id), or None."""
    return weights_source(config.get("pretrained"), config.get("hub_id"), "model.")


def _local_dir(source: str) -> str:
    """A local directory, or the hub snapshot of a hub id (safetensors and configs only)."""
    if Path(source).expanduser().exists():
        return str(Path(source).expanduser())
    from huggingface_hub import snapshot_download

    return snapshot_download(source, allow_patterns=["*.safetensors", "*.json"])


def weight_sources(model: VisionLanguageModel) -> list[WeightSource]:
    """The pretrained weights a model config asks for, as sources `materialize` reads slice by slice:
    the whole-model `pretrained` (a transformers DeepSeek-VL directory), else each part's `pretrained`."""
    config = model.config
    whole = whole_pretrained(config)
    if whole is not None:
        path = _local_dir(whole)
        arch = json.loads((Path(path) / "config.json").read_text())["model_type"]
        return [WeightSource(path, key_map=tuple(key_map(arch, model.llm.base_model_prefix)), origin="model.pretrained")]
    return [WeightSource(_local_dir(src), prefix=prefix, key_map=_PART_KEYS.get(prefix, ()),
                         origin=f"model.{prefix.removesuffix('model.')}pretrained") for prefix, src in part_sources(config)]


# a hub checkpoint of a whole SigLIP / CLIP model keeps the vision tower under `vision_model.` (transformers'
# from_pretrained strips it when it loads the tower alone, as the non-sharded build does)
_PART_KEYS = {"vision.low.model.": (("vision_model.", ""), ("", ""))}


def part_sources(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(parameter prefix, checkpoint) of each part that loads its own transformers weights (`pretrained`)."""
    parts = (("vision.low.model.", config["vision"].get("low")), ("vision.high.model.", config["vision"].get("high")),
             ("llm.", config["llm"]))
    return [(prefix, src) for prefix, node in parts if isinstance(node, Mapping)
            and (src := weights_source(node.get("pretrained"), node.get("hub_id"))) is not None]


def load_whole_pretrained(model: VisionLanguageModel, config: Mapping[str, Any], lora: LoraSettings | None) -> VisionLanguageModel:
    """The whole-model `pretrained` checkpoint of `config` (a transformers DeepSeek-VL directory or hub id) in place of
    `model`, built on meta from `config`: the checkpoint must have the same shapes."""
    whole = whole_pretrained(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tie = bool(model.llm.config.tie_word_embeddings)
    model = VisionLanguageModel.from_pretrained(whole, image_token_id=config["image_token_id"], lora=lora)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if got != expected and not (lora and lora.load_in_4bit):  # 4-bit weights are packed: other shapes
        diff = sorted(set(got.items()) ^ set(expected.items()))[:3]
        raise ConfigError(f"model.pretrained={whole!r} does not have the configured shapes (first differences: {diff}); use its matching preset")
    if bool(model.llm.config.tie_word_embeddings) != tie:
        log.warning("model.pretrained=%s ties word embeddings=%s, unlike model.llm.tie_word_embeddings; following the checkpoint",
                    whole, not tie)
    # the checkpoint's own part configs (what was really loaded) plus this node's top-level keys
    model.config = {**model.config, **{k: v for k, v in config.items() if k not in ("vision", "adaptor", "llm")}}
    return model


# ---- fine-tuning (model=from_pretrained, model.lora): kept apart from the size protocol above ----
def with_checkpoint_architecture(config: dict[str, Any]) -> dict[str, Any]:
    """`model=from_pretrained`: a node with `pretrained` and no vision/adaptor/llm takes its parts (and, unless set,
    its image token id) from the checkpoint's config.json; `model.lora` is checked here, before any weights."""
    lora_settings(config.get("lora"))
    source = config.get("pretrained")
    if any(config.get(k) is not None for k in ("vision", "adaptor", "llm")) or source in (None, False, True):
        return config
    from transformers import AutoConfig

    from .hf_interop import config_from_hf

    try:
        hf_config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.pretrained={source!r}: no transformers checkpoint there ({str(exc).splitlines()[0]})") from None
    arch = config_from_hf(hf_config)
    if config.get("image_token_id") is not None:
        arch["image_token_id"] = config["image_token_id"]
    return {**config, **arch}

