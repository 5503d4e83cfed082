"""`dsvl-data convert`: the formats users already have -> dsvl shards (docs/data_format.md, "Converting").

One function per input format (`formats`, `hf`) maps a record to a `Draft`; this module streams the inputs,
finishes drafts (images read and checked, the sample validated) in `workers` processes in input
order and writes ``OUT/multimodal/`` and ``OUT/text/``, byte-identical with any number of workers.
A record that cannot become a sample is a counted skip with its reason; nothing stops a conversion.
"""
from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from dsvl.data.bad_samples import BadSample, SkipCounter, SkipReason
from dsvl.data.collate import batched
from dsvl.data.convert import formats, hf
from dsvl.data.convert.common import Options, remap
from dsvl.data.convert.inputs import Unreadable, read_records
from dsvl.data.convert.media import image_bytes, shard_image
from dsvl.data.schema import parse_sample
from dsvl.data.shards import ShardWriter
from dsvl.errors import DataError

log = logging.getLogger(__name__)
FORMATS = {"llava": formats.llava, "sharegpt": formats.sharegpt, "messages": formats.messages, "hf": hf.draft,
           "mmc4": formats.mmc4, "text": formats.text}
MODALITIES = ("auto", "text", "multimodal")
_BLOCK = 64  # records per worker handed out at a time: bounded memory, however long the input


@dataclass
class ConvertReport:
    """Outcome of a conversion: good samples per modality, skips per reason, shards written."""

    records: int = 0
    good: Counter[str] = field(default_factory=Counter)
    skipped: SkipCounter = field(default_factory=SkipCounter)
    dropped_images: int = 0
    shards: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        good = ", ".join(f"{m} {n}" for m, n in sorted(self.good.items())) or "none"
        dropped = f"; {self.dropped_images} missing images dropped from documents" if self.dropped_images else ""
        return (f"{self.records} records -> {sum(self.good.values())} good samples ({good}) in {len(self.shards)} "
                f"shards; {self.skipped.summary()}{dropped}; {self.records / max(self.seconds, 1e-9):.0f} records/s")

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "good": dict(self.good), "skipped": self.skipped.as_dict(),
                "dropped_images": self.dropped_images, "shards": self.shards, "seconds": round(self.seconds, 3)}


def _finish(item: tuple[int, Any], fmt: str, opts: Options) -> tuple[Any, ...]:
    """One record -> ("ok", modality, raw sample, dropped images) or ("skip", reason, detail, key)."""
    index, record = item
    key = f"{index:09d}"
    try:
        if isinstance(record, Unreadable):
            raise BadSample(SkipReason.BAD_JSON, record.detail)
        d = FORMATS[fmt](remap(record, opts.columns), opts)
        modality = "multimodal" if d.images else "text"
        if opts.modality != "auto" and modality != opts.modality:
            raise BadSample(SkipReason.UNKNOWN_MODALITY, f"{modality} sample (--modality {opts.modality})")
        doc = {**d.meta, "modality": modality, "category": opts.category}
        doc.update({"text": d.text} if d.text is not None else {"conversation": d.conversation})
        raw: dict[str, Any] = {"__key__": key, "json": doc}
        for i, ref in enumerate(d.images):
            ext, data = shard_image(image_bytes(ref, opts.images), opts.max_image_side)
            raw[f"{i}.{ext}"] = data
        parse_sample(raw, decode_images=False)  # the shard schema: placeholders = images, roles, text
        return "ok", modality, raw, d.dropped_images
    except BadSample as e:
        return "skip", e.reason.value, e.detail, key
    except KeyError as e:
        return "skip", SkipReason.MISSING_FIELD.value, f"no field {str(e)[:80]}", key
    except (TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:  # fields of the wrong type
        return "skip", SkipReason.BAD_JSON.value, f"{type(e).__name__}: {str(e)[:200]}", key


def _records(fmt: str, inputs: Sequence[str], opts: Options, split: str, subset: str | None) -> Iterator[Any]:
    if fmt == "hf":
        for source in inputs:
            columns, rows = hf.read_records(source, split, subset)
            opts.layout = hf.layout_of(columns, opts.columns)
            log.info("%s: %s layout", source, opts.layout)
            yield from rows
        return
    for path in inputs:
        if not Path(path).is_file():
            raise DataError(f"input {path!r} not found")
    for path in inputs:
        yield from read_records(path)


def _results(items: Iterable[tuple[int, Any]], fn: Any, workers: int) -> Iterator[tuple[Any, ...]]:
    if workers <= 1:
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        for block in batched(items, _BLOCK * workers):
            yield from pool.imap(fn, block, chunksize=8)


def convert(fmt: str, inputs: Sequence[str], out: str | Path, *, images: str | Path | None = None,
            category: str | None = None, modality: str = "auto", shard_size: int = 1000, workers: int = 1,
            columns: dict[str, str] | None = None, max_image_side: int = 2048, split: str = "train",
            subset: str | None = None, prefix: str = "shard", progress: bool = True) -> ConvertReport:
    """Convert `inputs` of format `fmt` into shards under ``out/multimodal`` and ``out/text``."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    if modality not in MODALITIES:
        raise DataError(f"--modality must be one of {MODALITIES}, got {modality!r}")
    if shard_size < 1 or workers < 1 or max_image_side < 1:
        raise DataError("--shard-size, --workers and --max-image-side must be >= 1")
    if not inputs:
        raise DataError("no inputs given")
    out = Path(out)
    if any(any((out / m).glob("*.tar")) for m in ("multimodal", "text")):
        raise DataError(f"{out} already holds shards; convert into an empty --out")
    root = Path(images) if images is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"--images {str(root)!r} is not a folder")
    name = Path(str(inputs[0]).rstrip("/")).name.split(".")[0]
    opts = Options(images=root, category=category or name, modality=modality, columns=dict(columns or {}),
                   max_image_side=max_image_side)
    report = ConvertReport()
    start = time.perf_counter()
    records = _records(fmt, inputs, opts, split, subset)
    first = next(records, None)  # hf: reading the first row recognises the layout (needed by workers)
    items = enumerate(itertools.chain([first] if first is not None else [], records))
    fn = functools.partial(_finish, fmt=fmt, opts=opts)
    writers: dict[str, ShardWriter] = {}
    from tqdm import tqdm

    try:
        for res in tqdm(_results(items, fn, workers), desc=f"convert {fmt}", unit="record", disable=not progress):
            report.records += 1
            if res[0] == "skip":
                report.skipped.add(SkipReason(res[1]), res[3], res[2])
                continue
            _, mod, raw, dropped = res
            if mod not in writers:
                writers[mod] = ShardWriter(out / mod, prefix, shard_size)
            writers[mod].write(raw)
            report.good[mod] += 1
            report.dropped_images += dropped
    finally:
        for w in writers.values():
            w.close()
    report.shards = [str(p) for w in writers.values() for p in w.paths]
    report.seconds = time.perf_counter() - start
    log.info("converted %s", report.summary())
    return report
