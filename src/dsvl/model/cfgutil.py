"""Plain-Python handling of config nodes, so `dsvl.model` accepts DictConfig without importing omegaconf."""
from __future__ import annotations

import dataclasses
import inspect
import pydoc
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from .errors import ConfigError

_FIELD = re.compile(r"^\w+=")  # a part's message that starts with the offending setting


def to_plain(node: Any) -> Any:
    """Recursively turn Mapping / Sequence config nodes (DictConfig, ListConfig, dict) into dicts and lists."""
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        return [to_plain(v) for v in node]
    return node


def split_target(node: Any, key: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """(the object its `_target_` names, imported by `pydoc.locate`; the other keys) of a config node."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key} must be a config node with a _target_, got {type(node).__name__}")
    kwargs = to_plain(node)
    if "_target_" not in kwargs:
        raise ConfigError(f"{key} has no _target_; accepted: a node like {{_target_: dsvl.model.adaptor.MLPGelu, ...}}")
    path = kwargs.pop("_target_")
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"{key}._target_ must be a dotted import path like 'dsvl.model.vision.SiglipTower', got {path!r}")
    try:
        target = pydoc.locate(path)
    except pydoc.ErrorDuringImport as exc:
        raise ConfigError(f"{key}._target_={path!r} cannot be imported ({type(exc.value).__name__}: {exc.value})") from None
    if target is None:
        raise ConfigError(f"{key}._target_={path!r} cannot be imported (no such module or attribute)")
    return target, kwargs


def instantiate(node: Any, key: str, derived: Mapping[str, tuple[Any, str]] | None = None) -> Any:
    """Call a node's `_target_` with its keys; errors become one-line ConfigErrors naming `key`. `derived`: argument
    -> (value, what it is) from the parts built before (an adaptor's widths), filled in where the node leaves it
    unset, else it must agree; a None value means the built parts cannot provide it."""
    target, kwargs = split_target(node, key)
    params = inspect.signature(target).parameters
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [] if open_kwargs else sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown} for {target.__qualname__}; accepted: {', '.join(params)}")
    for name, (value, what) in (derived or {}).items():
        if name not in params:
            continue
        given = kwargs.get(name)
        if value is None:
            if given is None and params[name].default is params[name].empty:
                raise ConfigError(f"{key}: {target.__qualname__} needs {what} ({name}), which these parts do not have")
        elif given is None:
            kwargs[name] = value
        elif given != value:
            raise ConfigError(f"{key}.{name}={given} does not match {what} ({value}); accepted: {value} or null (derived)")
    try:
        return target(**kwargs)
    except ConfigError as exc:  # raised by the part itself: name where it sits in the config
        sep = "." if _FIELD.match(str(exc)) else ": "
        raise ConfigError(f"{key}{sep}{exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: invalid settings for {target.__qualname__}: {' '.join(str(exc).split())}") from None


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
