"""Webdataset shard streams: read tars, split across ranks and workers, shuffle, resume by position
(docs/data_format.md, "Sharding and shuffling"; docs/scale.md). A position ``(epoch, offset, where)``
resumes in constant time from byte offsets where a shard can be seeked, else by re-reading to `offset`.
"""
from __future__ import annotations

import glob
import logging
import os
import random
import tarfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from torch.utils.data import get_worker_info

from dsvl.data.bad_samples import BadSample, SkipCounter, SkipReason
from dsvl.errors import DataError

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


def _tar_samples(url: str, start: int = 0) -> Iterator[tuple[RawSample, int, int]]:
    """(sample, where it starts, where the next one starts) of one tar from `start`: a byte offset for a
    plain local tar, else the number of samples to pass over. Raises the tar's read errors."""
    import webdataset as wds
    from webdataset.tariterators import base_plus_ext

    seek = url.endswith(".tar") and os.path.isfile(url)  # plain local tar: sample positions are byte offsets
    stream = open(url, "rb") if seek else wds.gopen(url, "rb")
    base = start if seek else 0
    skip = 0 if seek else start
    if seek:
        stream.seek(start)
    current: RawSample | None = None
    first = nxt = base
    count = 0
    with stream, tarfile.open(fileobj=stream, mode="r|" if seek else "r|*") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, field = base_plus_ext(m.name)  # webdataset's key / field split (at the basename's first dot)
            if not field:
                continue
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if current is not None and current["__key__"] != key:
                nxt = base + m.offset if seek else count + 1
                if count >= skip:
                    yield current, first, nxt
                count += 1
                current = None
            if current is None:
                current, first = {"__key__": key, "__url__": url}, (base + m.offset if seek else count)
            current[field.lower()] = data
    if current is not None and count >= skip:
        yield current, first, -1  # -1: the shard is done


def read_tar(url: str, counter: SkipCounter | None = None) -> Iterator[RawSample]:
    """Samples of one tar (consecutive members grouped by key). A truncated or unreadable shard is
    counted once as BAD_SHARD and ends there; the samples before the damage are kept."""
    return (sample for sample, _, _ in _read_from(url, 0, counter))


def _read_from(url: str, start: int, counter: SkipCounter | None) -> Iterator[tuple[RawSample, int, int]]:
    try:
        yield from _tar_samples(url, start)
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        (counter or SkipCounter()).add(SkipReason.BAD_SHARD, url, f"{type(e).__name__}: {e}")


def iter_samples(urls: str | list[str], counter: SkipCounter | None = None) -> Iterator[Any]:
    """Parsed `Sample`s (images decoded) of shards in order, bad ones counted and skipped; for
    evaluation sets such as the demo's multiple-choice shards."""
    from dsvl.data.schema import parse_sample

    counter = counter if counter is not None else SkipCounter()
    yield from counter.parsed((raw for url in expand_urls(urls) for raw in read_tar(url, counter)), parse_sample)


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` of every source: whole shards index::count of the epoch's shard order, or
    every count-th sample of all shards when there are fewer shards than parts."""

    index: int = 0
    count: int = 1

    @classmethod
    def of(cls, rank: int, world_size: int) -> "Part":
        """The part of this (rank, DataLoader worker): parts = world_size * num_workers."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return cls(rank * workers + worker, world_size * workers)


class SourceReader:
    """Endless stream of good samples of one source for one part; skips bad ones (counted)."""

    def __init__(self, name: str, urls: list[str], part: Part, seed: int, encode: Callable[[RawSample], Any],
                 counter: SkipCounter, shuffle: int = 1000, loop: bool = True) -> None:
        if not urls:
            raise DataError(f"data source {name!r} has no shards")
        self.name, self.urls, self.part, self.seed = name, list(urls), part, seed
        self.encode, self.counter, self.shuffle, self.loop = encode, counter, shuffle, loop
        self.epoch, self.offset = 0, 0
        self._started = self._good = False

    def _start_epoch(self, epoch: int, where: Mapping[str, Any] | None = None) -> None:
        """This part's shards of `epoch`, read from the start or from a saved `where` (re-reading its buffer only)."""
        shards = list(self.urls)
        random.Random(f"{self.seed}/{self.name}/shards/{epoch}").shuffle(shards)
        n, k = self.part.count, self.part.index
        self._by_shard = len(shards) >= n
        self._mine = shards[k::n] if self._by_shard else shards
        self._rng = random.Random(f"{self.seed}/{self.name}/buffer/{epoch}/{k}/{n}")
        self._cursor, self._buffer, self._draining, self._raw = [0, 0, 0], [], False, None
        if where is not None:
            self._cursor, self._draining = [int(x) for x in where["cursor"]], bool(where["draining"])
            state = where["rng"]
            self._rng.setstate((state[0], tuple(state[1]), state[2]))
            self._buffer = [(list(ref), self._read_one(ref)) for ref in where["buffer"]]

    def _read_one(self, ref: list[int]) -> RawSample:
        """The raw sample a buffer reference (shard, start, index) names: one seek and one read."""
        for sample, _, _ in _read_from(self._mine[ref[0]], ref[1], self.counter):
            return sample
        return {"__key__": f"{self._mine[ref[0]]}@{ref[1]}", "__url__": self._mine[ref[0]]}  # shard gone: a bad sample

    def _next_raw(self) -> tuple[list[int], RawSample] | None:
        """The next raw sample of this part with its reference, advancing the cursor (shard, start, index)."""
        n, k = self.part.count, self.part.index
        while self._cursor[0] < len(self._mine):
            shard, start, index = self._cursor
            if self._raw is None:
                self._raw = _read_from(self._mine[shard], start, self.counter)
            got = next(self._raw, None)
            if got is None:  # the shard is done (or damaged: counted)
                self._cursor, self._raw = [shard + 1, 0, index], None
                continue
            sample, first, nxt = got
            self._cursor = [shard, nxt, index + 1] if nxt >= 0 else [shard + 1, 0, index + 1]
            if nxt < 0:
                self._raw = None
            if self._by_shard or index % n == k:
                return [shard, first, index], sample
        return None

    def _next_item(self) -> RawSample | None:
        """Reservoir-style buffer shuffle as a step function (its state is `where`); `shuffle` <= 1 keeps the order."""
        size = max(self.shuffle, 1)
        if not self._draining:
            while len(self._buffer) < size:
                got = self._next_raw()
                if got is None:
                    break
                self._buffer.append(got)
            got = self._next_raw() if len(self._buffer) >= size else None
            if got is not None:
                j = self._rng.randrange(size) if size > 1 else 0  # size 1 keeps the order and draws nothing
                out, self._buffer[j] = self._buffer[j], got
                return out[1]
            self._draining = True
            self._rng.shuffle(self._buffer)  # a list of one draws nothing
            self._buffer.reverse()  # drained from the end
        return self._buffer.pop()[1] if self._buffer else None

    def seek(self, epoch: int, offset: int, where: Mapping[str, Any] | None = None) -> None:
        """Go to a saved position: from its `where` (reads the buffer only), else by replaying `offset` raw items."""
        self.epoch, self.offset = int(epoch), int(offset)
        self._start_epoch(self.epoch, where)
        self._started = True
        if where is None:
            self.offset = 0
            for _ in range(int(offset)):
                if self._next_item() is None:
                    break
                self.offset += 1

    @property
    def position(self) -> tuple[int, int, dict[str, Any]]:
        """(epoch, raw items consumed this epoch, where): what `seek` takes back."""
        if not self._started:
            self._start_epoch(self.epoch)
            self._started = True
        rng = self._rng.getstate()
        where = {"cursor": list(self._cursor), "buffer": [ref for ref, _ in self._buffer], "draining": self._draining,
                 "rng": [rng[0], list(rng[1]), rng[2]]}
        return self.epoch, self.offset, where

    def next_good(self) -> tuple[Any, tuple[int, int, dict[str, Any]]] | None:
        """Next sample that parses and encodes, with the position just before it.

        None at the end of the data when `loop` is False; a looping source whose whole part
        yields nothing good for two epochs raises (a config problem, not a bad sample)."""
        empty_epochs = 0
        while True:
            if not self._started:
                self._good = self.offset > 0
            before = self.position  # starts the epoch when needed
            raw = self._next_item()
            if raw is None:
                if not self.loop:
                    return None
                empty_epochs = 0 if self._good else empty_epochs + 1
                if empty_epochs >= 2:
                    raise RuntimeError(f"data source {self.name!r} has no readable samples for part "
                                       f"{self.part.index} of {self.part.count}")
                self.epoch, self.offset, self._started = self.epoch + 1, 0, False
                continue
            self.offset += 1
            try:
                out = self.encode(raw)
            except BadSample as e:
                self.counter.add(e.reason, e.key or str(raw.get("__key__", "")), e.detail)
                continue
            self._good = True
            return out, before
