"""LoRA / QLoRA with peft on a `VisionLanguageModel` (`model.lora`), and adapters in peft's own format under
transformers' DeepSeek-VL names, so `PeftModel.from_pretrained(<base>, dir)` loads them (docs/finetune.md)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"
ADAPTER_ONLY_KEY = "dsvl_adapter_only"  # set in checkpoints that hold trainable weights only (base weights: model.pretrained)
LORA_KEYS = ("r", "alpha", "dropout", "targets", "load_in_4bit")
LORA_PARTS = ("vision.low", "vision.high", "llm")  # the adaptor is small: trained fully (stage.trainable)
# where each part lives in transformers' DeepseekVL(Hybrid)ForConditionalGeneration
HF_PART_PREFIX = {"vision.low": "model.vision_model", "vision.high": "model.high_res_vision_model", "llm": "model.language_model"}


@dataclass(frozen=True)
class LoraSettings:
    """A checked `model.lora` node."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: dict[str, list[str]] = field(default_factory=dict)
    load_in_4bit: bool = False


def lora_settings(node: Any) -> LoraSettings | None:
    """`model.lora` checked (None when absent); QLoRA without CUDA or bitsandbytes is a ConfigError here, before any weights."""
    if node in (None, False):
        return None
    if not isinstance(node, Mapping):
        raise ConfigError(f"model.lora must be a mapping with {', '.join(LORA_KEYS)}; got {node!r}")
    unknown = sorted(set(node) - set(LORA_KEYS))
    if unknown:
        raise ConfigError(f"model.lora: unknown keys {unknown}; accepted: {', '.join(LORA_KEYS)}")
    targets = {str(k): [str(t) for t in (v or [])] for k, v in dict(node.get("targets") or {}).items()}
    bad = sorted(set(targets) - set(LORA_PARTS))
    if bad:
        raise ConfigError(f"model.lora.targets: unknown parts {bad}; accepted: {', '.join(LORA_PARTS)} (the adaptor trains fully)")
    if not any(targets.values()):
        raise ConfigError("model.lora.targets names no module; e.g. {llm: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}")
    settings = LoraSettings(r=int(node.get("r", 16)), alpha=float(node.get("alpha", 32)), dropout=float(node.get("dropout", 0.05)),
                            targets=targets, load_in_4bit=bool(node.get("load_in_4bit", False)))
    if settings.r < 1 or not 0 <= settings.dropout < 1:
        raise ConfigError(f"model.lora: r={settings.r} must be >= 1 and dropout={settings.dropout} in [0, 1)")
    if settings.load_in_4bit:
        if not torch.cuda.is_available():
            raise ConfigError("model.lora.load_in_4bit=true (QLoRA) needs a CUDA GPU and none is visible; use experiment=finetune/lora on this machine")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("model.lora.load_in_4bit=true (QLoRA) needs bitsandbytes: pip install bitsandbytes (or use experiment=finetune/lora)")
    return settings


def quantization_config(settings: LoraSettings | None, skip_modules: list[str]) -> Any:
    """transformers' BitsAndBytesConfig for QLoRA (NF4, double quantization, bf16 compute; `skip_modules` stay in
    full precision), None otherwise."""
    if settings is None or not settings.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip_modules)


def _peft_config(settings: LoraSettings, prefixes: Mapping[str, str], **extra: Any) -> Any:
    from peft import LoraConfig

    # one regex over full module names: `<part prefix>.<anything>.<target>` for every part with targets
    alts = [f"{re.escape(prefixes[part])}\\..*\\.({'|'.join(map(re.escape, names))})"
            for part, names in settings.targets.items() if names]
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules="^(" + "|".join(alts) + ")$", **extra)


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Put LoRA adapters into `model`'s parts (in place); `model.lora_settings` remembers them for saving."""
    from peft import inject_adapter_in_model
    from peft.tuners.lora import LoraLayer
    from peft.utils.error import NoMatchingPeftModuleError

    parts = model.parts()
    missing = [p for p, names in settings.targets.items() if names and p not in parts]
    if missing:
        raise ConfigError(f"model.lora.targets names {missing} but this model has only {list(parts)}")
    try:
        inject_adapter_in_model(_peft_config(settings, {p: p for p in LORA_PARTS}), model, adapter_name=ADAPTER_NAME)
    except NoMatchingPeftModuleError:
        raise ConfigError(f"model.lora.targets={settings.targets} matches no module of the model") from None
    wrapped = {p for p, m in parts.items() if any(isinstance(x, LoraLayer) for x in m.modules())}
    empty = [p for p, names in settings.targets.items() if names and p not in wrapped]
    if empty:
        raise ConfigError(f"model.lora.targets[{empty[0]}]={settings.targets[empty[0]]} matches no module of that part")
    model.lora_settings = settings
    log.info("LoRA r=%d alpha=%g on %s", settings.r, settings.alpha, ", ".join(sorted(wrapped)))
    return model


def is_lora_param(name: str) -> bool:
    return ".lora_" in name


def has_lora(module: nn.Module) -> bool:
    return any(is_lora_param(n) for n, _ in module.named_parameters())


@contextlib.contextmanager
def merged_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: every LoRA layer merged into its base weight and replaced by that base layer (a plain
    module tree, as an export needs). On exit the LoRA layers come back, unmerged."""
    from peft.tuners.lora import LoraLayer

    swapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    if any(getattr(m.get_base_layer(), "quant_state", None) is not None or "4bit" in type(m).__name__ for _, m in swapped):
        raise ConfigError("a QLoRA model (4-bit base) cannot be exported merged in place; merge its adapter onto a bf16 base "
                          "with dsvl.model.export.merge_adapter(base, adapter_dir, out)")
    for name, module in swapped:
        module.merge()
        model.set_submodule(name, module.get_base_layer())
    try:
        yield model
    finally:
        for name, module in swapped:
            model.set_submodule(name, module)
            module.unmerge()


def adapter_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors under peft's transformers names on CPU, `modules_to_save`: the transformers modules of trainable
    parameters outside LoRA layers) of a LoRA model. FSDP2 shards are gathered: every rank calls this."""
    from .hf_keys import architecture_of, key_map

    if getattr(model, "lora_settings", None) is None:
        raise ConfigError("this model has no LoRA adapters (model.lora is not set): nothing to save as an adapter")
    pairs = key_map(architecture_of(model), model.llm.base_model_prefix)
    tensors: dict[str, torch.Tensor] = {}
    modules_to_save: set[str] = set()
    for name, param in model.named_parameters():
        if not (is_lora_param(name) or param.requires_grad):
            continue
        dsvl_name = name.replace(f".{ADAPTER_NAME}.", ".")
        # the first (transformers, dsvl) pair naming this parameter: a module prefix (ends in ".") or the parameter itself
        hf, dsvl = next(((h, d) for h, d in pairs if dsvl_name.startswith(d) and (d.endswith(".") or d == dsvl_name)),
                        (None, ""))
        if hf is None:
            raise ConfigError(f"{dsvl_name} has no transformers counterpart")
        if not is_lora_param(name):
            if not dsvl.endswith("."):
                raise ConfigError(f"{name} trains fully but is no module of the transformers model; freeze it or give its part LoRA targets")
            modules_to_save.add(hf[:-1])
        value = param.full_tensor() if hasattr(param, "full_tensor") else param  # FSDP2 shards are DTensors
        tensors[f"base_model.model.{hf}{dsvl_name[len(dsvl):]}"] = value.detach().to("cpu").contiguous()
    return tensors, sorted(modules_to_save)


def save_adapter(model: nn.Module, out: str | Path, base: str | None = None,
                 state: tuple[dict[str, torch.Tensor], list[str]] | None = None) -> Path:
    """The adapter (LoRA weights + fully trained parts) as a peft directory for `PeftModel.from_pretrained(base, out)`,
    keys under transformers' DeepSeek-VL names; `state` is `adapter_state(model)` when already gathered."""
    from safetensors.torch import save_file

    tensors, modules_to_save = state or adapter_state(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = _peft_config(model.lora_settings, HF_PART_PREFIX, modules_to_save=modules_to_save or None, base_model_name_or_path=base)
    config.save_pretrained(str(out))
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    log.info("saved the LoRA adapter (%d tensors, modules_to_save %s) to %s", len(tensors), modules_to_save, out)
    return out


def adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """`adapter_config.json` of a peft adapter directory; a ConfigError when there is none."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ConfigError(f"{adapter_dir} is not a peft adapter directory (no adapter_config.json)")
    return json.loads(path.read_text())
