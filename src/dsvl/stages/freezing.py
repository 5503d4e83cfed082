"""Freezing by part name (`vision.low`, `vision.high`, `adaptor`, `llm`), as the paper's stages do.

The part names are those of `VisionLanguageModel.parts()` (docs/architecture.md). Frozen parts get
`requires_grad=False`, are left out of the optimizer and stay in eval mode (see `VLMStage.train`),
so dropout and norm statistics of a frozen tower never change. A trainable part with LoRA adapters
(`model.lora`) trains its adapters only.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from torch import nn

from dsvl.errors import ConfigError
from dsvl.model.lora import has_lora, is_lora_param

log = logging.getLogger(__name__)

PART_NAMES: tuple[str, ...] = ("vision.low", "vision.high", "adaptor", "llm")
# Aliases accepted on the command line: `stage.trainable=[vision,...]` means both towers.
ALIASES: dict[str, tuple[str, ...]] = {"vision": ("vision.low", "vision.high"), "siglip": ("vision.low",), "sam": ("vision.high",)}


class FreezeConfigError(ConfigError):
    """A trainable-part list that names unknown or absent parts (one-line message)."""


def expand_part_names(names: Iterable[str], available: Sequence[str] | None = None) -> list[str]:
    """Canonical part names for `names` (aliases expanded; with `available`, absent tower aliases dropped);
    FreezeConfigError for unknown names, or for names of which the model has no part."""
    out: list[str] = []
    for raw in names:
        name = str(raw).strip()
        if name not in ALIASES and name not in PART_NAMES:
            raise FreezeConfigError(
                f"stage.trainable: unknown part {name!r}; known parts: {', '.join(PART_NAMES)} (aliases: {', '.join(ALIASES)})"
            )
        expanded = [p for p in ALIASES.get(name, (name,)) if available is None or p in available]
        if not expanded:
            raise FreezeConfigError(f"stage.trainable: this model has no {name!r} part (it has {list(available or [])})")
        out.extend(p for p in expanded if p not in out)
    return out


def apply_freezing(model: nn.Module, trainable: Iterable[str]) -> tuple[list[str], list[str]]:
    """Set requires_grad per part; returns (trainable parts, frozen parts) in part order. Parameters outside every
    part (none in the shared core) are frozen with a warning, so a new module never trains by accident."""
    parts: Mapping[str, nn.Module] = model.parts()
    wanted = expand_part_names(trainable, list(parts))
    for name, module in parts.items():
        module.requires_grad_(name in wanted)
        if name in wanted and has_lora(module):  # a LoRA-wrapped part trains its adapters only
            for param_name, param in module.named_parameters():
                param.requires_grad_(is_lora_param(param_name))
    covered = {id(p) for m in parts.values() for p in m.parameters()}
    stray = [(n, p) for n, p in model.named_parameters() if id(p) not in covered]
    if stray:
        log.warning("parameters outside every part are frozen: %s",
                    ", ".join(n for n, _ in stray[:8]) + (" ..." if len(stray) > 8 else ""))
    for _, p in stray:
        p.requires_grad_(False)
    names = list(parts)
    return [n for n in names if n in wanted], [n for n in names if n not in wanted]


def freeze_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A fixed-width table of `parameter_summary()` rows: part, status, total, trainable."""
    header = f"{'part':<12} {'status':<8} {'params':>14} {'trainable':>14}"
    lines = [header, "-" * len(header)]
    total = trainable = 0
    for row in rows:
        t, tr = int(row["total"]), int(row["trainable"])
        total, trainable = total + t, trainable + tr
        status = "train" if tr == t and t else ("frozen" if tr == 0 else "partial")
        lines.append(f"{str(row['part']):<12} {status:<8} {t:>14,} {tr:>14,}")
    lines.append(f"{'total':<12} {'':<8} {total:>14,} {trainable:>14,}")
    return "\n".join(lines)
