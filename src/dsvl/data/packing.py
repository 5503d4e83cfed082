"""Sequence packing for text steps: several samples per row, attention kept inside each sample.

Rows are filled greedily in stream order up to `max_length`; a sample that does not fit starts
the next row (it stays pending in the stream when the micro-batch is full, so nothing is lost
and the resume position stays exact). Isolation: `collate_rows` restarts `position_ids` at 0 for
every sample. transformers (5.x) Llama-family models then keep attention inside each sample when
called with ``attention_mask=None``, ``use_cache=False`` (no KV cache) and these `position_ids`
(`masking_utils.find_packed_sequence_indices`); with a 2D attention_mask they would NOT isolate,
so `model_inputs_for_packed` drops it. tests/data/test_packing.py checks losses to 1e-5.
"""
from __future__ import annotations

from typing import Any, Protocol

from dsvl.data.tokenize import Encoded


class PeekStream(Protocol):
    def peek(self) -> Encoded: ...
    def pop(self) -> Encoded: ...


def pack_rows(stream: PeekStream, rows: int, max_length: int) -> list[list[Encoded]]:
    """`rows` rows of samples from `stream`, each row's total length <= max_length."""
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
