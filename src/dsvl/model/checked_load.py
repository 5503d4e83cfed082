"""Per-part weights, checked: transformers loads a part from a bigger checkpoint by its prefix (`SiglipVisionModel`
from a `SiglipModel`) and merely logs the keys it did not find; dsvl refuses them (never a silently random part)."""
from __future__ import annotations

import logging
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)


def weights_source(pretrained: Any, hub_id: str | None, key: str = "") -> str | None:
    """Where a part's weights come from: None (random init), `hub_id` (pretrained=true) or the path / hub id given."""
    if pretrained in (None, False):
        return None
    if pretrained is True and not hub_id:
        raise ConfigError(f"{key}pretrained=true needs {key}hub_id; accepted: a hub id or a local directory")
    return hub_id if pretrained is True else str(pretrained)


def from_pretrained_checked(cls: Any, key: str, pretrained: Any, hub_id: str | None, **kwargs: Any) -> Any:
    """`cls.from_pretrained(<weights_source>, **kwargs)`, None without a source; ConfigError (one line) when any of
    its weights was not in the checkpoint."""
    source = weights_source(pretrained, hub_id)
    if source is None:
        return None
    log.info("%s: loading weights from %s", key, source)
    try:
        model, info = cls.from_pretrained(source, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}.pretrained={source!r}: cannot load it as {cls.__name__} ({str(exc).strip().splitlines()[0]})") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ConfigError(f"{key}.pretrained={source!r}: {len(missing)} {cls.__name__} weights are not in that checkpoint "
                          f"(e.g. {', '.join(missing[:3])}); it is not a checkpoint of this part")
    log.info("%s: all %s weights loaded from %s (%d checkpoint keys unused)", key, cls.__name__, source, len(info.get("unexpected_keys") or []))
    return model
