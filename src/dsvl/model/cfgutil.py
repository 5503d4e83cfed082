"""Plain-Python handling of config nodes and part factories, so `dsvl.model` accepts DictConfig and Hydra's partials
without importing omegaconf or Hydra."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from dsvl.errors import located

from .errors import ConfigError

def to_plain(node: Any) -> Any:
    """Recursively turn Mapping / Sequence config nodes (DictConfig, ListConfig, dict) into dicts and lists."""
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        return [to_plain(v) for v in node]
    return node


def complete(part: Any, key: str, derived: Mapping[str, tuple[Any, str]]) -> Any:
    """A part given as a factory (a `functools.partial`, as Hydra's `_partial_: true` makes) called with the sizes
    that only the parts built before it know: `derived` maps an argument to (value, what it is; None = these parts
    do not have it). A size the factory already sets must agree. A built module is returned as it is."""
    if isinstance(part, nn.Module) or not callable(part):
        return part
    func, given = (part.func, part.keywords) if isinstance(part, functools.partial) else (part, {})
    params = inspect.signature(func).parameters
    unknown = [] if any(p.kind is p.VAR_KEYWORD for p in params.values()) else sorted(set(given) - set(params))
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown} for {func.__qualname__}; accepted: {', '.join(params)}")
    kwargs = {}
    for name, (value, what) in derived.items():
        if name not in params:
            continue
        if value is None:
            if given.get(name) is None and params[name].default is params[name].empty:
                raise ConfigError(f"{key}: {func.__qualname__} needs {what} ({name}), which these parts do not have")
        elif given.get(name) is None:
            kwargs[name] = value
        elif given[name] != value:
            raise ConfigError(f"{key}.{name}={given[name]} does not match {what} ({value}); accepted: {value} or null (derived)")
    try:
        return part(**kwargs)
    except ConfigError as exc:  # raised by the part itself: name where it sits in the config
        raise ConfigError(located(key, str(exc))) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: invalid settings for {func.__qualname__}: {' '.join(str(exc).split())}") from None
    except (RuntimeError, ArithmeticError) as exc:  # torch / transformers building from these sizes
        raise ConfigError(f"{key}: {func.__qualname__} cannot be built with these settings "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None


def hf_config_fields(cls: type) -> set[str] | None:
    """Keys a transformers config class accepts (its dataclass fields and aliases); None when it is not a dataclass."""
    if not dataclasses.is_dataclass(cls):
        return None
    return {f.name for f in dataclasses.fields(cls)} | set(getattr(cls, "attribute_map", {}))


def make_hf_config(cls: type, **kwargs: Any) -> Any:
    """A transformers config from YAML keys: a typo or a rejected value is a one-line ConfigError, not silently kept
    (without the config key: `instantiate` prefixes it)."""
    from huggingface_hub.errors import StrictDataclassError

    kwargs = to_plain(kwargs)  # hydra.utils.instantiate passes ListConfig / DictConfig values
    known = hf_config_fields(cls)
    unknown = sorted(set(kwargs) - known) if known is not None else []
    if unknown:
        raise ConfigError(f"unknown keys {unknown} for transformers' {cls.__name__}; accepted: its documented fields")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, StrictDataclassError) as exc:
        raise ConfigError(f"transformers' {cls.__name__} rejects these settings: {' '.join(str(exc).split())}") from None
