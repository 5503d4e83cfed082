"""Modality-grouped micro-batches (DeepSeek-VL paper): every global step draws all its micro-batches
from the stream its modality names.

`GlobalStepBatches` is an IterableDataset that itself walks global micro-batch indices
i = 0, 1, 2, ...; micro-batch i belongs to global step i // accumulate_grad_batches, whose
modality comes from the schedule. With W DataLoader workers, logical worker w builds micro-batches
i = w (mod W) from its own part of every source, and the DataLoader's in-order round robin hands
them to the trainer in index order. Each batch carries ``batch["state"]`` (its index and the
worker's stream positions after it); `DSVLDataModule` strips it before the batch reaches the
model and keeps the latest per worker for `state_dict`. On resume from index i0, DataLoader
worker k plays logical worker (k + i0) mod W, so the next batch is exactly micro-batch i0.

Modes: ``grouped`` (the paper), ``mixed`` (both modalities inside every micro-batch, by the
same scheduled ratio: the baseline the benchmark compares against), ``text_only``,
``multimodal_only`` (stage 1).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from torch.utils.data import IterableDataset, get_worker_info

from dsvl.data.bad_samples import SkipCounter
from dsvl.data.collate import collate, collate_rows
from dsvl.data.encode import SampleEncoder
from dsvl.data.errors import DataConfigError
from dsvl.data.mixture import Mixture, SourceConfig
from dsvl.data.packing import BufferedPacker
from dsvl.data.schedule import MULTIMODAL, TEXT, ModalitySchedule
from dsvl.data.streams import Part, SourceReader, expand_urls

log = logging.getLogger(__name__)
MODES = ("grouped", "mixed", "text_only", "multimodal_only")


@dataclass(frozen=True)
class BatchingConfig:
    """How micro-batches are made."""

    micro_batch_size: int = 8
    max_length: int = 512
    packing: bool | Mapping[str, bool] | frozenset[str] = False  # true (both modalities) or {text:, multimodal:}
    packing_buffer: int = 256  # look-ahead samples per packed modality (they hold their pixels: mind the memory)
    pad_to_max_length: bool = False  # static shapes (e.g. for compiled models / TPUs)
    mode: str = "grouped"
    accumulate_grad_batches: int = 1
    seed: int = 0
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DataConfigError(f"data mode must be one of {MODES}, got {self.mode!r}")
        if self.micro_batch_size < 1 or self.max_length < 2 or self.accumulate_grad_batches < 1:
            raise DataConfigError("micro_batch_size, accumulate_grad_batches must be >= 1 and max_length >= 2")
        if self.packing_buffer < 1:
            raise DataConfigError(f"data.packing_buffer must be >= 1, got {self.packing_buffer}")
        object.__setattr__(self, "packing", packed_modalities(self.packing))


def packed_modalities(packing: bool | Mapping[str, bool] | frozenset[str] | None) -> frozenset[str]:
    """The modalities whose steps are packed: `true` = both, or a mapping ``{text: bool, multimodal: bool}``."""
    if isinstance(packing, frozenset):
        return packing
    if isinstance(packing, Mapping):
        unknown = set(packing) - {TEXT, MULTIMODAL}
        if unknown:
            raise DataConfigError(f"data.packing keys must be {TEXT!r} / {MULTIMODAL!r}, got {sorted(unknown)}")
        return frozenset(m for m, on in packing.items() if on)
    if packing is None or isinstance(packing, bool):
        return frozenset((TEXT, MULTIMODAL)) if packing else frozenset()
    raise DataConfigError(f"data.packing must be true, false or {{text: bool, multimodal: bool}}, got {packing!r}")


def build_mixtures(sources: Sequence[SourceConfig], encoder: SampleEncoder, part: Part, seed: int, shuffle: int,
                   counter: SkipCounter, loop: bool = True) -> dict[str, Mixture]:
    """One mixture per modality that has sources."""
    out: dict[str, Mixture] = {}
    for modality in (TEXT, MULTIMODAL):
        mine = [s for s in sources if s.modality == modality and s.weight > 0]
        if not mine:
            continue
        enc = encoder.for_modality(modality)
        readers = [SourceReader(s.name, expand_urls(s.urls), part, seed, enc.for_format(s.format), counter, shuffle, loop)
                   for s in mine]
        out[modality] = Mixture(readers, [s.weight for s in mine])
    return out


class GlobalStepBatches(IterableDataset):
    """Endless, deterministic stream of micro-batch dicts (docs/architecture.md) for one rank."""

    def __init__(self, sources: Sequence[SourceConfig], encoder: SampleEncoder, schedule: ModalitySchedule,
                 cfg: BatchingConfig, rank: int = 0, world_size: int = 1, start_micro_index: int = 0,
                 resume: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self.sources, self.encoder, self.schedule, self.cfg = list(sources), encoder, schedule, cfg
        self.rank, self.world_size = rank, world_size
        self.start_micro_index, self.resume = start_micro_index, dict(resume or {})
        have = {s.modality for s in self.sources if s.weight > 0}
        need = {"text_only": {TEXT}, "multimodal_only": {MULTIMODAL}}.get(cfg.mode, set())
        if cfg.mode in ("grouped", "mixed"):
            ratios = {schedule.start, schedule.target}
            need = ({TEXT} if max(ratios) > 0 else set()) | ({MULTIMODAL} if min(ratios) < 1 else set())
        if need - have:
            raise DataConfigError(f"data mode {cfg.mode!r} with schedule {schedule} needs {sorted(need)} sources, "
                             f"config has {sorted(have) or 'none'}")
        self.image_inputs = [(i.name, i.size) for i in (encoder.images.spec.inputs if encoder.images else ())]

    def step_of(self, micro_index: int) -> int:
        return micro_index // self.cfg.accumulate_grad_batches

    def modality_of(self, micro_index: int) -> str:
        """Modality of a micro-batch: that of its global step (same on every rank)."""
        if self.cfg.mode == "text_only":
            return TEXT
        if self.cfg.mode == "multimodal_only":
            return MULTIMODAL
        return self.schedule.modality(self.step_of(micro_index))

    def _mixed_text_count(self, i: int) -> int:
        """Text samples in micro-batch i of a mixed batch: error diffusion on the scheduled ratio."""
        B = self.cfg.micro_batch_size
        r = self.schedule.language_ratio(self.step_of(i))
        return int(math.floor(r * (i + 1) * B + 0.5) - math.floor(r * i * B + 0.5))

    def _make(self, i: int, streams: dict[str, Mixture], packers: dict[str, BufferedPacker]) -> dict[str, Any]:
        B, pad = self.cfg.micro_batch_size, self.encoder.text.pad_id
        pad_to = self.cfg.max_length if self.cfg.pad_to_max_length else None
        if self.cfg.mode == "mixed":
            if MULTIMODAL not in streams:
                n_text = B
            elif TEXT not in streams:
                n_text = 0
            else:
                n_text = self._mixed_text_count(i)
            samples = [streams[TEXT].pop() for _ in range(n_text)] + [streams[MULTIMODAL].pop() for _ in range(B - n_text)]
            return collate_rows([[s] for s in samples], pad, self.image_inputs, pad_to)
        modality = self.modality_of(i)
        stream = streams[modality]
        if modality in packers:
            return collate_rows(packers[modality].rows(B), pad, self.image_inputs, pad_to)
        return collate_rows([[stream.pop()] for _ in range(B)], pad, self.image_inputs, pad_to)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        k, W = (info.id, info.num_workers) if info is not None else (0, 1)
        i = self.start_micro_index + k
        lw = i % W
        saved = self.resume.get(lw)
        if saved is not None and int(saved.get("num_workers", W)) != W:
            log.warning("data workers changed since the checkpoint (%s -> %s): streams restart, resume is not exact",
                        saved.get("num_workers"), W)
            saved = None
        counter = SkipCounter(saved.get("skipped") if saved else None)
        part = Part(self.rank, self.world_size, lw, W)
        streams = build_mixtures(self.sources, self.encoder, part, self.cfg.seed, self.cfg.shuffle_buffer, counter)
        packing = self.cfg.packing if self.cfg.mode in ("grouped", "text_only", "multimodal_only") else frozenset()
        packers = {m: BufferedPacker(s, self.cfg.max_length, self.cfg.packing_buffer)
                   for m, s in streams.items() if m in packing}
        if saved:
            for m, st in saved.get("streams", {}).items():
                if m in streams:
                    streams[m].load_state_dict(st)
            for m, st in saved.get("packers", {}).items():
                if m in packers:  # rewinds its stream to the oldest pending sample and redraws the buffer
                    packers[m].load_state_dict(st)
            # redrawing a buffer meets again the bad samples already counted before the checkpoint
            counter.counts.clear()
            counter.merge(saved.get("skipped") or {})
        while True:
            batch = self._make(i, streams, packers)
            batch["state"] = {"micro_index": i, "step": self.step_of(i), "worker": lw, "num_workers": W,
                              "rank": self.rank, "streams": {m: s.state_dict() for m, s in streams.items()},
                              "packers": {m: p.state_dict() for m, p in packers.items()},
                              "skipped": counter.as_dict()}
            yield batch
            i += W


class EvalBatches(IterableDataset):
    """Finite, unshuffled pass over validation sources: text batches, then multimodal batches."""

    def __init__(self, sources: Sequence[SourceConfig], encoder: SampleEncoder, micro_batch_size: int,
                 rank: int = 0, world_size: int = 1, max_batches_per_modality: int | None = None) -> None:
        super().__init__()
        self.sources, self.encoder, self.B = list(sources), encoder, micro_batch_size
        self.rank, self.world_size, self.max_batches = rank, world_size, max_batches_per_modality
        self.image_inputs = [(i.name, i.size) for i in (encoder.images.spec.inputs if encoder.images else ())]
        self.counter = SkipCounter()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        k, W = (info.id, info.num_workers) if info is not None else (0, 1)
        part = Part(self.rank, self.world_size, k, W)
        for modality in (TEXT, MULTIMODAL):
            enc = self.encoder.for_modality(modality)
            readers = [SourceReader(s.name, expand_urls(s.urls), part, 0, enc.for_format(s.format), self.counter,
                                    shuffle=0, loop=False)
                       for s in self.sources if s.modality == modality]
            buf, made = [], 0
            for r in readers:
                while (got := r.next_good()) is not None:
                    buf.append(got[0])
                    if len(buf) == self.B:
                        yield collate(buf, self.encoder.text.pad_id, self.image_inputs)
                        buf, made = [], made + 1
                        if self.max_batches is not None and made >= self.max_batches:
                            break
                if self.max_batches is not None and made >= self.max_batches:
                    break
            if buf and (self.max_batches is None or made < self.max_batches):
                yield collate(buf, self.encoder.text.pad_id, self.image_inputs)
