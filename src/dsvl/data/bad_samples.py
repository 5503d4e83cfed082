"""Skipped samples: counted per reason, logged with their key, never fatal (docs/data_format.md)."""
from __future__ import annotations

import logging
from collections import Counter
from enum import Enum
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


LOG_FIRST = 5  # per reason and process; after that only the 10th, 100th, ... skip is logged


class SkipReason(str, Enum):
    """Why a sample (or a whole shard) was skipped. Values are stable log/metric names."""

    BAD_IMAGE = "bad_image"  # undecodable or truncated image
    MISSING_FIELD = "missing_field"  # no json, no text/conversation, a placeholder without its image file
    BAD_JSON = "bad_json"  # json that does not parse or is not an object
    PLACEHOLDER_MISMATCH = "placeholder_mismatch"  # number of <image_placeholder> != number of images
    EMPTY_TEXT = "empty_text"
    TOO_LONG = "too_long"  # longer than the max sequence length after placeholder expansion
    UNKNOWN_MODALITY = "unknown_modality"  # modality not text/multimodal, or not the stream's
    BAD_CONVERSATION = "bad_conversation"  # unknown role, non-string content, no turns
    BAD_SHARD = "bad_shard"  # truncated tar or unreadable shard (counted once per shard)


class BadSample(Exception):
    """Raised by the parsers; caught by the stream, which counts and skips."""

    def __init__(self, reason: SkipReason, detail: str = "", key: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason, self.detail, self.key = reason, detail, key


class SkipCounter:
    """Counts per reason. Mergeable (workers, ranks) by `merge`/`+=`; plain-dict state for checkpoints."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts: Counter[str] = Counter({k: int(v) for k, v in (counts or {}).items() if v})

    def add(self, reason: SkipReason, key: str = "", detail: str = "") -> None:
        """Count one skip and log it with its key."""
        self.counts[reason.value] += 1
        n = self.counts[reason.value]
        if n > LOG_FIRST and str(n).rstrip("0") != "1":  # not a power of ten
            return
        log.warning("skipped sample %s: %s%s [%s so far]", key or "?", reason.value, f" ({detail})" if detail else "", n)

    def merge(self, other: "SkipCounter | Mapping[str, int]") -> "SkipCounter":
        counts = other.counts if isinstance(other, SkipCounter) else other
        for k, v in counts.items():
            self.counts[k] += int(v)
        return self

    __iadd__ = merge

    def parsed(self, raws: Iterable[Mapping[str, Any]], parse: Callable[[Any], T]) -> Iterator[T]:
        """`parse(raw)` of every raw sample; one that raises `BadSample` is counted here and skipped."""
        for raw in raws:
            try:
                yield parse(raw)
            except BadSample as e:
                self.add(e.reason, e.key or str(raw.get("__key__", "")), e.detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def summary(self) -> str:
        """One line for end-of-run logs."""
        if not self.total:
            return "no samples skipped"
        return f"skipped {self.total} samples: " + ", ".join(f"{k}={v}" for k, v in self.as_dict().items())

    @staticmethod
    def merged(counters: Iterable["SkipCounter | Mapping[str, int]"]) -> "SkipCounter":
        out = SkipCounter()
        for c in counters:
            out.merge(c)
        return out

    def all_reduce(self) -> "SkipCounter":
        """Sum over all ranks when torch.distributed is initialised (collective: call on every rank)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return SkipCounter(self.counts)
        gathered: list[dict[str, int] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.as_dict())
        return SkipCounter.merged(g or {} for g in gathered)
