"""Model presets by name without a Hydra app: `model_config("tiny", ["model/adaptor=mlp_gelu"])` -> plain dict for
`dsvl.model.build_model`. It composes `conf/` with Hydra, so it lives in `cli/` (only `cli/` imports Hydra).
The configs are the package's `conf/` (a copy travels in the wheel), so this works outside the repo.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsvl.model.cfgutil import to_plain
from dsvl.model.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def available_presets(conf_dir: Path = CONF_DIR) -> list[str]:
    """Names of the full model presets (conf/model/*.yaml)."""
    return sorted(p.stem for p in (conf_dir / "model").glob("*.yaml"))


def model_config(name: str, overrides: Sequence[str] = (), conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose `conf/model/<name>.yaml` with Hydra overrides (e.g. "model/vision=tiny_siglip", "model.image_token_id=5")."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    presets = available_presets(conf_dir)
    if name not in presets:
        raise ConfigError(f"unknown model preset {name!r}; accepted: {', '.join(presets)}")
    outer = GlobalHydra.instance().hydra  # keep a surrounding Hydra app's state intact
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            try:
                cfg = compose(overrides=[f"+model={name}", *overrides])
            except HydraException as exc:
                raise ConfigError(f"model preset {name!r} with overrides {list(overrides)}: {str(exc).splitlines()[0]}") from None
        return to_plain(OmegaConf.to_container(cfg.model, resolve=True))
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)
