"""Model presets by name without a Hydra app: `model_config("tiny", ["model/adaptor=mlp_gelu"])` -> plain dict for
`dsvl.cli.models.build_model`. It composes the package's `conf/` with Hydra, so it lives in `cli/` and works outside the repo.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dsvl.cli._config import CONFIG_DIR, compose
from dsvl.model.cfgutil import to_plain
from dsvl.model.errors import ConfigError


def available_presets() -> list[str]:
    """Names of the full model presets (conf/model/*.yaml)."""
    return sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def model_config(name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose `conf/model/<name>.yaml` with Hydra overrides (e.g. "model/vision=tiny_siglip", "model.image_token_id=5")."""
    from omegaconf import OmegaConf

    presets = available_presets()
    if name not in presets:
        raise ConfigError(f"unknown model preset {name!r}; accepted: {', '.join(presets)}")
    cfg = compose([f"+model={name}", *overrides], config_name=None)  # a bad override: one-line ConfigError
    return to_plain(OmegaConf.to_container(cfg.model, resolve=True))
