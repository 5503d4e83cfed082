"""Sequence packing: several samples (text, or multimodal with all their images) per row of `max_length`,
best-fit decreasing from a bounded look-ahead buffer that resumes exactly (docs/packing.md).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from dsvl.data.tokenize import Encoded

if TYPE_CHECKING:
    from dsvl.data.mixture import Mixture


def pack_rows(stream: Mixture, rows: int, max_length: int) -> list[list[Encoded]]:
    """`rows` rows filled greedily in stream order, each row's total length <= max_length (the
    baseline `BufferedPacker` is measured against: a sample that does not fit starts the next row)."""
    out: list[list[Encoded]] = []
    for _ in range(rows):
        row: list[Encoded] = [stream.pop()]
        used = len(row[0])
        while used + len(stream.peek()) <= max_length:
            s = stream.pop()
            row.append(s)
            used += len(s)
        out.append(row)
    return out


@dataclass
class _Pending:
    seq: int  # draw index from the stream
    sample: Encoded
    before: dict[str, Any]  # stream state just before this sample was drawn


def best_fit_rows(pending: list[_Pending], rows: int, max_length: int) -> list[list[_Pending]]:
    """Best-fit decreasing of `pending` (in draw order) into `rows` rows: the oldest `rows`
    samples seed one row each, then the others, longest first, go where they fit most tightly."""
    out: list[list[_Pending]] = [[p] for p in pending[:rows]]
    free = [max_length - len(p.sample) for p in pending[:rows]]
    for p in sorted(pending[rows:], key=lambda p: (-len(p.sample), p.seq)):
        n = len(p.sample)
        fits = [r for r in range(len(out)) if free[r] >= n]
        if fits:
            r = min(fits, key=lambda r: (free[r], r))
            out[r].append(p)
            free[r] -= n
    return [sorted(row, key=lambda p: p.seq) for row in out]


class BufferedPacker:
    """Packed micro-batches from a stream through a look-ahead buffer of `buffer_size` samples."""

    def __init__(self, stream: Mixture, max_length: int, buffer_size: int) -> None:
        self.stream, self.max_length, self.buffer_size = stream, int(max_length), max(1, int(buffer_size))
        self.buffer: deque[_Pending] = deque()
        self._drawn = 0  # samples drawn from the stream so far (the next draw index)

    def rows(self, n: int) -> list[list[Encoded]]:
        """`n` rows, each at most `max_length` tokens (samples are never longer: the encoder skips those)."""
        while len(self.buffer) < max(self.buffer_size, n):
            before = self.stream.state_dict()
            self.buffer.append(_Pending(self._drawn, self.stream.pop(), before))
            self._drawn += 1
        packed = best_fit_rows(list(self.buffer), n, self.max_length)
        taken = {p.seq for row in packed for p in row}
        self.buffer = deque(p for p in self.buffer if p.seq not in taken)
        return [[p.sample for p in row] for row in packed]

    def state_dict(self) -> dict[str, Any]:
        """The stream position before the oldest pending sample, how many samples were drawn since
        and which of them (by offset) are still pending. Small: no sample data."""
        if not self.buffer:
            return {"anchor": self.stream.state_dict(), "drawn": 0, "pending": []}
        first = self.buffer[0].seq
        return {"anchor": self.buffer[0].before, "drawn": self._drawn - first,
                "pending": [p.seq - first for p in self.buffer]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rewind the stream to the anchor and redraw the buffer (re-encoding its samples)."""
        self.stream.load_state_dict(state["anchor"])
        keep = {int(i) for i in state.get("pending", [])}
        self.buffer.clear()
        for i in range(int(state.get("drawn", 0))):
            before = self.stream.state_dict()
            sample = self.stream.pop()
            if i in keep:
                self.buffer.append(_Pending(i, sample, before))
        self._drawn = int(state.get("drawn", 0))
