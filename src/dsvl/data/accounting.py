"""Per-modality totals of what training consumed (steps, samples, tokens, padding, images), and the
realised language share of global steps, for logs and the end-of-run summary."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping


class DataAccounting:
    """Fed one batch at a time (in consumption order) by `DSVLDataModule.on_before_batch_transfer`."""

    FIELDS = ("samples", "tokens", "pad_tokens", "images")

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("steps", "micro_batches", *self.FIELDS), 0))
        self.last_step = -1

    def update(self, modality: str, stats: Mapping[str, int], step: int) -> None:
        t = self.totals[modality]
        t["micro_batches"] += 1
        if step != self.last_step:
            t["steps"] += 1
            self.last_step = step
        for k in self.FIELDS:
            t[k] += int(stats.get(k, 0))

    @property
    def language_ratio(self) -> float:
        """Realised share of text global steps so far (nan before the first step)."""
        steps = sum(t["steps"] for t in self.totals.values())
        return self.totals["text"]["steps"] / steps if steps and "text" in self.totals else float("nan")

    @property
    def text_share(self) -> float:
        """Share of text steps among the single-modality ones (mixed steps left out; nan before any)."""
        text, multimodal = (self.totals[m]["steps"] if m in self.totals else 0 for m in ("text", "multimodal"))
        return text / (text + multimodal) if text + multimodal else float("nan")

    def as_dict(self) -> dict[str, float]:
        """Flat metric names, e.g. ``text/tokens``, ``multimodal/pad_tokens``, ``language_ratio``."""
        out: dict[str, float] = {f"{m}/{k}": v for m, t in sorted(self.totals.items()) for k, v in t.items()}
        out["language_ratio"] = self.language_ratio
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"totals": {m: dict(t) for m, t in self.totals.items()}, "last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.totals.clear()
        for m, t in state.get("totals", {}).items():
            self.totals[m].update(t)
        self.last_step = int(state.get("last_step", -1))
