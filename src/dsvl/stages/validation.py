"""Multiple-choice validation during training (`val/mc_acc`, SPEC §4: stage 2 is watched by
multi-choice PPL). Adds an MC dataloader to the datamodule's validation loaders; `VLMStage`
scores its batches (they carry `row_option`) with `dsvl.eval.score_options`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

log = logging.getLogger(__name__)


class MultipleChoiceBatches(IterableDataset):
    """Finite pass over MC shards in `collate`d batches; sample i goes to rank i % world_size."""

    def __init__(self, urls: Any, collate: Any, batch_size: int, limit: int | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.urls, self.collate, self.batch_size = urls, collate, int(batch_size)
        self.limit, self.rank, self.world_size = limit, rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from dsvl.data.bad_samples import BadSample
        from dsvl.data.multiple_choice import parse_mc_sample
        from dsvl.data.streams import expand_urls, read_tar

        buf: list[Any] = []
        seen = skipped = 0
        for url in expand_urls(self.urls):
            for raw in read_tar(url):
                if self.limit is not None and seen >= self.limit:
                    break
                index, seen = seen, seen + 1
                if index % self.world_size != self.rank:
                    continue
                try:
                    buf.append(parse_mc_sample(raw))
                except BadSample:
                    skipped += 1
                    continue
                if len(buf) == self.batch_size:
                    yield self.collate(buf)
                    buf = []
        if buf:
            yield self.collate(buf)
        if skipped:
            log.warning("multiple-choice validation skipped %d bad samples", skipped)


def add_mc_validation(datamodule: Any, mc_cfg: Any, tokenizer: Any, vision_spec: Any, system_prompt: str | None) -> None:
    """Append an MC loader to `datamodule.val_dataloader()` (config `mc_val`: shards, batch_size, limit)."""
    from dsvl.data.multiple_choice import MultipleChoiceCollator

    collate = MultipleChoiceCollator(tokenizer, vision_spec, mode=str(mc_cfg.get("mode", "text")),
                                     system_prompt=system_prompt)
    base = datamodule.val_dataloader

    def val_dataloader() -> list[DataLoader]:
        loaders = base()
        loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
        trainer = getattr(datamodule, "trainer", None)
        rank, world = (int(trainer.global_rank), int(trainer.world_size)) if trainer is not None else (0, 1)
        dataset = MultipleChoiceBatches(mc_cfg.shards, collate, int(mc_cfg.get("batch_size", 8)), mc_cfg.get("limit"), rank, world)
        return [*loaders, DataLoader(dataset, batch_size=None, num_workers=0)]

    datamodule.val_dataloader = val_dataloader
