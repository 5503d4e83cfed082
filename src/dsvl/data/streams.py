"""Webdataset shard streams: read tars, split across ranks and workers, shuffle, resume by position.

A `SourceReader` is one (rank, worker) part of one source. Each epoch it shuffles the shard list
with (seed, source, epoch), takes its part (whole shards when there are at least as many shards
as parts, else every n-th sample of all shards), shuffles samples through a seeded buffer and
counts how many raw samples it consumed. Its position ``(epoch, offset)`` is all it takes to
resume: the same part replays the same raw items (no image decoding) up to the offset.
Parts are disjoint within an epoch, so two ranks never see the same sample of that epoch.
"""
from __future__ import annotations

import glob
import logging
import os
import random
import tarfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from dsvl.data.bad_samples import BadSample, SkipCounter, SkipReason
from dsvl.data.errors import DataConfigError

log = logging.getLogger(__name__)
RawSample = dict[str, Any]


def expand_urls(spec: str | list[str]) -> list[str]:
    """Shard list from a directory (its *.tar), a glob, a brace pattern ({000..009}) or a list of those."""
    if isinstance(spec, (list, tuple)):
        return [u for s in spec for u in expand_urls(s)]
    spec = str(spec)
    if os.path.isdir(spec):
        return sorted(glob.glob(os.path.join(spec, "*.tar")))
    if "{" in spec:
        import braceexpand

        return [u for p in braceexpand.braceexpand(spec) for u in expand_urls(p)]
    if any(c in spec for c in "*?["):
        return sorted(glob.glob(spec))
    return [spec]


def _split_name(member: str) -> tuple[str, str]:
    """webdataset convention: key = path up to the first dot of the basename, field = the rest."""
    d, base = os.path.split(member)
    key, _, field = base.partition(".")
    return (os.path.join(d, key) if d else key), field.lower()


def read_tar(url: str, counter: SkipCounter | None = None) -> Iterator[RawSample]:
    """Samples of one tar (consecutive members grouped by key). A truncated or unreadable shard is
    counted once as BAD_SHARD and ends there; the samples before the damage are kept."""
    current: RawSample | None = None
    try:
        import webdataset as wds

        stream = wds.gopen(url, "rb")
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, field = _split_name(m.name)
                if not field:
                    continue
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": url}
                current[field] = data
        if current is not None:
            yield current
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        (counter or SkipCounter()).add(SkipReason.BAD_SHARD, url, f"{type(e).__name__}: {e}")


def iter_samples(urls: str | list[str], counter: SkipCounter | None = None) -> Iterator[Any]:
    """Parsed `Sample`s (images decoded) of shards in order, bad ones counted and skipped; for
    evaluation sets such as the demo's multiple-choice shards."""
    from dsvl.data.schema import parse_sample

    counter = counter if counter is not None else SkipCounter()
    for url in expand_urls(urls):
        for raw in read_tar(url, counter):
            try:
                yield parse_sample(raw)
            except BadSample as e:
                counter.add(e.reason, e.key, e.detail)


def shuffle_buffer(items: Iterator[RawSample], size: int, rng: random.Random) -> Iterator[RawSample]:
    """Classic reservoir-style buffer shuffle; `size` <= 1 keeps the order."""
    if size <= 1:
        yield from items
        return
    buf: list[RawSample] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


@dataclass
class Part:
    """Which part of every source this reader gets: parts = world_size * num_workers."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


class SourceReader:
    """Endless stream of good samples of one source for one part; skips bad ones (counted)."""

    def __init__(self, name: str, urls: list[str], part: Part, seed: int, encode: Callable[[RawSample], Any],
                 counter: SkipCounter, shuffle: int = 1000, loop: bool = True) -> None:
        if not urls:
            raise DataConfigError(f"data source {name!r} has no shards")
        self.name, self.urls, self.part, self.seed = name, list(urls), part, seed
        self.encode, self.counter, self.shuffle, self.loop = encode, counter, shuffle, loop
        self.epoch, self.offset = 0, 0
        self._it: Iterator[RawSample] | None = None
        self._good = False

    def _epoch_items(self, epoch: int) -> Iterator[RawSample]:
        shards = list(self.urls)
        random.Random(f"{self.seed}/{self.name}/shards/{epoch}").shuffle(shards)
        n, k = self.part.count, self.part.index
        by_shard = len(shards) >= n
        mine = shards[k::n] if by_shard else shards

        def raw() -> Iterator[RawSample]:
            i = 0
            for url in mine:
                for s in read_tar(url, self.counter):
                    if by_shard or i % n == k:
                        yield s
                    i += 1

        rng = random.Random(f"{self.seed}/{self.name}/buffer/{epoch}/{k}/{n}")
        return shuffle_buffer(raw(), self.shuffle, rng)

    def seek(self, epoch: int, offset: int) -> None:
        """Go to a saved position by replaying raw items (tar reads only, no decoding)."""
        self.epoch, self.offset, self._it = epoch, 0, self._epoch_items(epoch)
        for _ in range(offset):
            if next(self._it, None) is None:
                break
            self.offset += 1

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.offset

    def next_good(self) -> tuple[Any, tuple[int, int]] | None:
        """Next sample that parses and encodes, with the position just before it.

        None at the end of the data when `loop` is False; a looping source whose whole part
        yields nothing good for two epochs raises (a config problem, not a bad sample)."""
        empty_epochs = 0
        while True:
            if self._it is None:
                self._it = self._epoch_items(self.epoch)
                self._good = self.offset > 0
            before = (self.epoch, self.offset)
            raw = next(self._it, None)
            if raw is None:
                if not self.loop:
                    return None
                empty_epochs = 0 if self._good else empty_epochs + 1
                if empty_epochs >= 2:
                    raise RuntimeError(f"data source {self.name!r} has no readable samples for part "
                                       f"{self.part.index}/{self.part.count} (rank {self.part.rank})")
                self.epoch, self.offset, self._it = self.epoch + 1, 0, None
                continue
            self.offset += 1
            try:
                out = self.encode(raw)
            except BadSample as e:
                self.counter.add(e.reason, e.key or str(raw.get("__key__", "")), e.detail)
                continue
            self._good = True
            return out, before
