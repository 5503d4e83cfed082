"""Plain-Python handling of config nodes, so `dsvl.model` accepts DictConfig without importing omegaconf."""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from .errors import ConfigError


def to_plain(node: Any) -> Any:
    """Recursively turn Mapping / Sequence config nodes (DictConfig, ListConfig, dict) into dicts and lists."""
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        return [to_plain(v) for v in node]
    return node


def resolve_target(path: Any, key: str) -> Callable[..., Any]:
    """Import the object a `_target_` string names; `key` is the config key, for the error message."""
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"{key}._target_ must be a dotted import path like 'dsvl.model.vision.SiglipTower', got {path!r}")
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):  # longest importable module, then attributes (e.g. Class.method)
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ConfigError(f"{key}._target_={path!r} cannot be imported (AttributeError: {exc})") from None
        return obj
    raise ConfigError(f"{key}._target_={path!r} cannot be imported (no module {parts[0]!r})")


def split_target(node: Any, key: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """(callable, kwargs) of a config node with a `_target_`."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key} must be a config node with a _target_, got {type(node).__name__}")
    kwargs = to_plain(node)
    if "_target_" not in kwargs:
        raise ConfigError(f"{key} has no _target_; accepted: a node like {{_target_: dsvl.model.adaptor.MLPGelu, ...}}")
    target = resolve_target(kwargs.pop("_target_"), key)
    return target, kwargs


def describe_node(node: Any, key: str, **context: Any) -> tuple[Callable[..., Any], dict[str, Any], Any]:
    """(target, kwargs, description): the target's `describe(**kwargs)` tells sizes without building weights."""
    target, kwargs = split_target(node, key)
    describe = getattr(target, "describe", None)
    if describe is None:
        raise ConfigError(f"{key}._target_ {target.__module__}.{target.__qualname__} has no describe(); model parts must declare their sizes")
    try:
        return target, kwargs, describe(key=key, **context, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: invalid settings for {target.__qualname__}: {exc}".replace("\n", " ")) from None


def hf_config_fields(cls: type) -> set[str] | None:
    """Keys a transformers config class accepts (its dataclass fields and aliases); None when it is not a dataclass."""
    if not dataclasses.is_dataclass(cls):
        return None
    return {f.name for f in dataclasses.fields(cls)} | set(getattr(cls, "attribute_map", {}))


def make_hf_config(cls: type, key: str, **kwargs: Any) -> Any:
    """A transformers config from YAML keys: a typo or a rejected value is a one-line ConfigError, not silently kept."""
    from huggingface_hub.errors import StrictDataclassError

    kwargs = to_plain(kwargs)  # hydra.utils.instantiate passes ListConfig / DictConfig values
    known = hf_config_fields(cls)
    unknown = sorted(set(kwargs) - known) if known is not None else []
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown} for transformers' {cls.__name__}; accepted: its documented fields")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, StrictDataclassError) as exc:
        raise ConfigError(f"{key}: transformers' {cls.__name__} rejects these settings: {' '.join(str(exc).split())}") from None
