"""Per-part parameter counts, shared by stages (freeze logging) and tools."""
from __future__ import annotations

from collections.abc import Mapping

from torch import nn


def parameter_summary(parts: Mapping[str, nn.Module]) -> list[dict[str, int | str]]:
    """Rows `{part, total, trainable}` in the order of `parts`; a parameter shared by two parts counts once, in the first."""
    seen: set[int] = set()
    rows: list[dict[str, int | str]] = []
    for name, module in parts.items():
        total = trainable = 0
        for p in module.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        rows.append({"part": name, "total": total, "trainable": trainable})
    return rows


def format_summary(rows: list[dict[str, int | str]]) -> str:
    """A small fixed-width table with a total line, for logs."""
    lines = [f"{'part':<12}{'total':>16}{'trainable':>16}"]
    for r in rows:
        lines.append(f"{r['part']:<12}{r['total']:>16,}{r['trainable']:>16,}")
    lines.append(f"{'total':<12}{sum(int(r['total']) for r in rows):>16,}{sum(int(r['trainable']) for r in rows):>16,}")
    return "\n".join(lines)
