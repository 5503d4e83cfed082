"""A weighted mixture of sources for one modality (the DeepSeek-VL paper's Tables 1 and 2 as config).

The next source is a deterministic quota (smooth weighted round robin on the counts drawn so far),
so the state is just those counts. `peek` shows the packer a sample without consuming it: a source
with a pending sample is saved at the position just before it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dsvl.data.encode import SOURCE_FORMATS
from dsvl.data.streams import SourceReader
from dsvl.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceConfig:
    """One data source: shards (dir, glob, brace pattern or list), weight within its modality, modality,
    and the shards' layout (`dsvl`, or `caption`: img2dataset tars streamed as caption samples)."""

    name: str
    urls: str | list[str]
    weight: float = 1.0
    modality: str = "text"
    format: str = "dsvl"


def parse_sources(cfg: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | None) -> list[SourceConfig]:
    """Sources from config: a mapping name -> {urls, weight, modality, format} or a list of {name, ...}."""
    if not cfg:
        return []
    items = cfg.items() if isinstance(cfg, Mapping) else ((c.get("name"), c) for c in cfg)
    out = []
    for name, c in items:
        if c is None:  # an override may null a source out
            continue
        if "urls" not in c:
            raise DataError(f"data source {name!r} needs 'urls'")
        modality = c.get("modality", "text")
        if modality not in ("text", "multimodal"):
            raise DataError(f"data source {name!r}: modality must be 'text' or 'multimodal', got {modality!r}")
        weight = float(c.get("weight", 1.0))
        if weight < 0:
            raise DataError(f"data source {name!r}: weight must be >= 0, got {weight}")
        fmt = c.get("format", "dsvl")
        if fmt not in SOURCE_FORMATS:
            raise DataError(f"data source {name!r}: format must be one of {SOURCE_FORMATS}, got {fmt!r}")
        if fmt == "caption" and modality != "multimodal":
            raise DataError(f"data source {name!r}: format 'caption' gives multimodal samples; set modality: multimodal")
        urls = c["urls"]
        if not (isinstance(urls, str) or isinstance(urls, Sequence) and urls and all(isinstance(u, str) for u in urls)):
            raise DataError(f"data source {name!r}: urls={urls!r}; accepted: a folder of .tar shards, a glob, a brace "
                            "pattern or a list of those")
        out.append(SourceConfig(str(name), list(urls) if not isinstance(urls, str) else urls, weight, modality, fmt))
    return out


class Mixture:
    """Endless stream of encoded samples drawn from weighted sources."""

    def __init__(self, readers: Sequence[SourceReader], weights: Sequence[float]) -> None:
        """`readers`: looping ones (they never end), with `weights` > 0 (`build_mixtures` keeps those)."""
        total = float(sum(weights))
        self.readers = list(readers)
        self.weights = [w / total for w in weights]
        self.counts = [0] * len(readers)
        self._pending: tuple[int, Any, tuple[int, int]] | None = None

    def _choose(self) -> int:
        n = sum(self.counts) + 1
        return max(range(len(self.readers)), key=lambda i: (self.weights[i] * n - self.counts[i], -i))

    def peek(self) -> Any:
        """The next sample, not yet consumed."""
        if self._pending is None:
            i = self._choose()
            sample, before = self.readers[i].next_good()  # type: ignore[misc]
            self._pending = (i, sample, before)
        return self._pending[1]

    def pop(self) -> Any:
        sample = self.peek()
        assert self._pending is not None
        self.counts[self._pending[0]] += 1
        self._pending = None
        return sample

    def state_dict(self) -> dict[str, Any]:
        pos = {r.name: list(r.position) for r in self.readers}
        if self._pending is not None:
            pos[self.readers[self._pending[0]].name] = list(self._pending[2])
        return {"counts": {r.name: c for r, c in zip(self.readers, self.counts)}, "positions": pos}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._pending = None
        counts, positions = state.get("counts", {}), state.get("positions", {})
        for i, r in enumerate(self.readers):
            self.counts[i] = int(counts.get(r.name, 0))
            if r.name in positions:
                r.seek(*positions[r.name])
            else:
                log.warning("no saved position for data source %r: it starts from the beginning", r.name)
