"""Sequence packing: several samples (text, or multimodal with all their images) per row of `max_length`.

`BufferedPacker` keeps a bounded look-ahead buffer of pending samples drawn from a stream and
fills each micro-batch's rows by best-fit decreasing: every row is first seeded with one of the
oldest pending samples (so no sample waits more than about buffer_size / rows micro-batches),
then the remaining samples, longest first, each go to the row whose free space fits them most
tightly. Everything is a function of the stream's order, so packing is deterministic; its state
is the stream position just before the oldest pending sample plus which of the samples drawn
since are still pending, so a resume replays the buffer exactly (nothing lost or duplicated).

Isolation: `collate_rows` restarts `position_ids` at 0 for every sample. transformers (5.x)
Llama-family models then keep attention inside each sample when called with
``attention_mask=None``, ``use_cache=False`` and these `position_ids`
(`masking_utils.find_packed_sequence_indices`; flash-attention-2 varlen on GPU); with a 2D
attention_mask they would NOT isolate, so `model_inputs_for_packed` (and the core's forward)
drop it. The images of a row are concatenated in sample order, i.e. in placeholder order, so the
core scatters each sample's features at its own image tokens. tests/data/test_packing.py checks
per-sample losses and gradients to 1e-5.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from dsvl.data.tokenize import Encoded


class PeekStream(Protocol):
    def peek(self) -> Encoded: ...
    def pop(self) -> Encoded: ...


class StatefulStream(Protocol):
    def pop(self) -> Encoded: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def pack_rows(stream: PeekStream, rows: int, max_length: int) -> list[list[Encoded]]:
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

    def __init__(self, stream: StatefulStream, max_length: int, buffer_size: int) -> None:
        self.stream, self.max_length, self.buffer_size = stream, int(max_length), max(1, int(buffer_size))
        self.buffer: deque[_Pending] = deque()
        self._drawn = 0  # samples drawn from the stream so far (the next draw index)

    def _fill(self, rows: int) -> None:
        while len(self.buffer) < max(self.buffer_size, rows):
            before = self.stream.state_dict()
            self.buffer.append(_Pending(self._drawn, self.stream.pop(), before))
            self._drawn += 1

    def rows(self, n: int) -> list[list[Encoded]]:
        """`n` rows, each at most `max_length` tokens (samples are never longer: the encoder skips those)."""
        self._fill(n)
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
        self._drawn = 0
        for i in range(int(state.get("drawn", 0))):
            before = self.stream.state_dict()
            sample = self.stream.pop()
            if i in keep:
                self.buffer.append(_Pending(i, sample, before))
        self._drawn = int(state.get("drawn", 0))


def model_inputs_for_packed(batch: dict[str, Any]) -> dict[str, Any]:
    """The kwargs for a transformers causal LM: for packed batches attention_mask is replaced by
    None so the model isolates samples from `position_ids` (padding is only at the row's end, a
    segment of its own, and carries label -100)."""
    keys = ("input_ids", "attention_mask", "position_ids", "labels")
    kwargs = {k: batch[k] for k in keys if k in batch}
    if "position_ids" in batch:
        kwargs["attention_mask"] = None
        kwargs["use_cache"] = False  # with a KV cache transformers skips packed-sequence detection
    return kwargs
