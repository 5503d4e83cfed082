"""Encoded samples -> the batch dict of docs/architecture.md (right padding, packed rows, stats)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Sequence, TypeVar

import torch

from dsvl.data.tokenize import IGNORE_INDEX, Encoded

T = TypeVar("T")


def collate_rows(rows: Sequence[Sequence[Encoded]], pad_id: int, image_inputs: Sequence[tuple[str, int]] = (),
                 pad_to: int | None = None) -> dict[str, Any]:
    """One row per list of samples; rows with several samples are packed (position_ids restart per
    sample, and the padding tail gets its own 0.. positions so it is a separate segment too). Image
    tensors are concatenated row by row, sample by sample: the order of the image placeholders."""
    packed = any(len(r) > 1 for r in rows)
    lengths = [sum(len(s) for s in r) for r in rows]
    T = max(max(lengths), pad_to or 0)
    B = len(rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for s in row:
            n = len(s)
            input_ids[b, t:t + n] = torch.tensor(s.input_ids)
            labels[b, t:t + n] = torch.tensor(s.labels)
            labels[b, t] = IGNORE_INDEX  # never predicted alone; packed, the previous sample's last token would
            position_ids[b, t:t + n] = torch.arange(n)
            t += n
        attention[b, :t] = 1
        position_ids[b, t:] = torch.arange(T - t)
    samples = [s for r in rows for s in r]
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if packed:
        batch["position_ids"] = position_ids
    if any(s.num_images for s in samples):
        batch.update({name: torch.cat([s.pixels[name] for s in samples if s.num_images]) for name, _ in image_inputs})
    real = int(sum(lengths))
    kinds = {s.modality for s in samples}
    batch["modality"] = kinds.pop() if len(kinds) == 1 else "mixed"
    batch["keys"] = [s.key for s in samples]
    batch["stats"] = {"samples": len(samples), "tokens": real, "pad_tokens": B * T - real,
                      "images": sum(s.num_images for s in samples)}
    return batch


def collate(samples: Sequence[Encoded], pad_id: int, image_inputs: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
    """One sample per row, right padded to the longest."""
    return collate_rows([[s] for s in samples], pad_id, image_inputs)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items in order, the last one shorter (Python 3.12's `itertools.batched`)."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
