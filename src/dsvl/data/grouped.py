"""Modality-grouped micro-batches (DeepSeek-VL paper): every global step draws all its micro-batches
from the stream its modality names (or, ``mixed``, both). Micro-batch g is built by logical part
g mod parts from that part's state alone, so a resume on another layout continues the same sequence
(docs/scale.md); its ``batch["state"]`` is what `DSVLDataModule` keeps for `state_dict`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import Any, Iterator, Mapping, Sequence

from torch.utils.data import IterableDataset, get_worker_info

from dsvl.data.bad_samples import SkipCounter
from dsvl.data.collate import batched, collate, collate_rows
from dsvl.data.encode import SampleEncoder
from dsvl.data.mixture import Mixture, SourceConfig
from dsvl.data.packing import BufferedPacker
from dsvl.data.schedule import MULTIMODAL, TEXT, ModalitySchedule
from dsvl.data.streams import Part, SourceReader, expand_urls
from dsvl.errors import DataError

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
            raise DataError(f"data mode must be one of {MODES}, got {self.mode!r}")
        if self.micro_batch_size < 1 or self.max_length < 2 or self.accumulate_grad_batches < 1:
            raise DataError("micro_batch_size, accumulate_grad_batches must be >= 1 and max_length >= 2")
        object.__setattr__(self, "packing", packed_modalities(self.packing))


def packed_modalities(packing: bool | Mapping[str, bool] | frozenset[str] | None) -> frozenset[str]:
    """The modalities whose steps are packed: `true` = both, or a mapping ``{text: bool, multimodal: bool}``."""
    if isinstance(packing, frozenset):
        return packing
    if isinstance(packing, Mapping):
        unknown = set(packing) - {TEXT, MULTIMODAL}
        if unknown:
            raise DataError(f"data.packing keys must be {TEXT!r} / {MULTIMODAL!r}, got {sorted(unknown)}")
        return frozenset(m for m, on in packing.items() if on)
    if packing is None or isinstance(packing, bool):
        return frozenset((TEXT, MULTIMODAL)) if packing else frozenset()
    raise DataError(f"data.packing must be true, false or {{text: bool, multimodal: bool}}, got {packing!r}")


def build_mixtures(sources: Sequence[SourceConfig], encoder: SampleEncoder, part: Part, seed: int, shuffle: int,
                   counter: SkipCounter) -> dict[str, Mixture]:
    """One mixture per modality that has sources."""
    out: dict[str, Mixture] = {}
    for modality in (TEXT, MULTIMODAL):
        mine = [s for s in sources if s.modality == modality and s.weight > 0]
        if not mine:
            continue
        enc = encoder.for_modality(modality)
        readers = [SourceReader(s.name, expand_urls(s.urls), part, seed, enc.for_format(s.format), counter, shuffle)
                   for s in mine]
        out[modality] = Mixture(readers, [s.weight for s in mine])
    return out


@dataclass
class PartStreams:
    """One logical part's mixtures, packers and skip counter (what a DataLoader worker holds per part)."""

    streams: dict[str, Mixture]
    packers: dict[str, BufferedPacker]
    counter: SkipCounter

    def position(self, global_index: int) -> dict[str, Any]:
        """The part's state after building micro-batch `global_index` (what the checkpoint keeps)."""
        return {"global_index": global_index, "streams": {m: s.state_dict() for m, s in self.streams.items()},
                "packers": {m: p.state_dict() for m, p in self.packers.items()}, "skipped": self.counter.as_dict()}


def layouts(parts: int) -> list[int]:
    """The values of world_size * max(num_workers, 1) that can build `parts` data parts: its divisors."""
    return [n for n in range(1, parts + 1) if parts % n == 0]


class GlobalStepBatches(IterableDataset):
    """Endless, deterministic stream of micro-batch dicts (docs/architecture.md) for one rank.

    `parts` is the number of logical data parts (default: world_size * DataLoader workers);
    `start_micro_index` is this rank's next local micro-batch and `resume` the saved position of
    each part (by part index) the run continues from."""

    def __init__(self, sources: Sequence[SourceConfig], encoder: SampleEncoder, schedule: ModalitySchedule,
                 cfg: BatchingConfig, rank: int = 0, world_size: int = 1, start_micro_index: int = 0,
                 resume: Mapping[int, Mapping[str, Any]] | None = None, parts: int | None = None) -> None:
        super().__init__()
        self.sources, self.encoder, self.schedule, self.cfg = list(sources), encoder, schedule, cfg
        self.rank, self.world_size, self.parts = rank, world_size, parts
        self.start_micro_index, self.resume = start_micro_index, dict(resume or {})
        have = {s.modality for s in self.sources if s.weight > 0}
        need = {"text_only": {TEXT}, "multimodal_only": {MULTIMODAL}}.get(cfg.mode, set())
        if cfg.mode in ("grouped", "mixed"):
            ratios = {schedule.start, schedule.target}
            need = ({TEXT} if max(ratios) > 0 else set()) | ({MULTIMODAL} if min(ratios) < 1 else set())
        if need - have:
            raise DataError(f"data mode {cfg.mode!r} with schedule {schedule} needs {sorted(need)} sources, "
                             f"config has {sorted(have) or 'none'}")
        self.image_inputs = [(i.name, i.size) for i in (encoder.images.spec.inputs if encoder.images else ())]

    def step_of(self, global_index: int) -> int:
        """Global step of micro-batch g: the same whatever the layout, for a given global batch."""
        return global_index // (self.cfg.accumulate_grad_batches * self.world_size)

    def _make(self, g: int, part: PartStreams) -> dict[str, Any]:
        B, streams = self.cfg.micro_batch_size, part.streams
        if self.cfg.mode == "mixed":  # text samples of micro-batch g: error diffusion on the scheduled ratio
            r = self.schedule.language_ratio(self.step_of(g)) if TEXT in streams else 0.0
            r = r if MULTIMODAL in streams else 1.0
            n_text = int(math.floor(r * (g + 1) * B + 0.5) - math.floor(r * g * B + 0.5))
            rows = [[streams[TEXT if k < n_text else MULTIMODAL].pop()] for k in range(B)]
        else:  # every micro-batch of a global step has the step's modality (the same on every rank)
            modality = {"text_only": TEXT, "multimodal_only": MULTIMODAL}.get(self.cfg.mode) \
                or self.schedule.modality(self.step_of(g))
            packer = part.packers.get(modality)
            rows = packer.rows(B) if packer is not None else [[streams[modality].pop()] for _ in range(B)]
        pad_to = self.cfg.max_length if self.cfg.pad_to_max_length else None
        return collate_rows(rows, self.encoder.text.pad_id, self.image_inputs, pad_to)

    def _open(self, index: int, parts: int) -> PartStreams:
        """Part `index`'s streams, fresh or at its saved position."""
        saved = self.resume.get(index)
        counter = SkipCounter(saved.get("skipped") if saved else None)
        streams = build_mixtures(self.sources, self.encoder, Part(index, parts), self.cfg.seed, self.cfg.shuffle_buffer,
                                 counter)
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
        return PartStreams(streams, packers, counter)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        k, W = (info.id, info.num_workers) if info is not None else (0, 1)
        R, r = self.world_size, self.rank
        V = self.parts or R * W
        if V % (R * W):
            raise DataError(f"{R} ranks x {W} data workers cannot build {V} data parts: "
                                  f"ranks x max(num_workers, 1) must be one of {layouts(V)}")
        held: dict[int, PartStreams] = {}
        i = self.start_micro_index + k
        while True:
            g = i * R + r
            p = g % V
            if p not in held:
                held[p] = self._open(p, V)
            batch = self._make(g, held[p])
            batch["state"] = {"micro_index": i, "step": self.step_of(g), "rank": r, "part": p,
                              "position": held[p].position(g)}
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
        part = Part.of(self.rank, self.world_size)
        for modality in (TEXT, MULTIMODAL):
            enc = self.encoder.for_modality(modality)
            readers = [SourceReader(s.name, expand_urls(s.urls), part, 0, enc.for_format(s.format), self.counter,
                                    shuffle=0, loop=False)
                       for s in self.sources if s.modality == modality]
            samples = (got[0] for r in readers for got in iter(r.next_good, None))
            if self.max_batches is not None:
                samples = islice(samples, self.max_batches * self.B)
            for batch in batched(samples, self.B):
                yield collate(batch, self.encoder.text.pad_id, self.image_inputs)
