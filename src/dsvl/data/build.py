"""Shard builder (dsvl JSONL + image folder -> shards; docs/data_format.md) and validator. Problems are
counted per reason and logged with the line's key; they never stop a build.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from dsvl.data.bad_samples import BadSample, SkipCounter, SkipReason
from dsvl.data.convert.media import image_bytes
from dsvl.data.schema import IMAGE_EXTENSIONS, caption_to_raw, loads, parse_sample
from dsvl.data.shards import ShardWriter
from dsvl.data.streams import expand_urls, read_tar
from dsvl.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Report:
    """Outcome of a build or a validation."""

    good: int = 0
    skipped: SkipCounter = field(default_factory=SkipCounter)
    shards: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.good} good samples in {len(self.shards)} shards; {self.skipped.summary()}"

    def as_dict(self) -> dict[str, Any]:
        return {"good": self.good, "skipped": self.skipped.as_dict(), "shards": self.shards}


def _records(jsonl: str | Path, image_root: Path, counter: SkipCounter) -> Iterator[dict[str, Any]]:
    with open(jsonl, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            key = f"line{lineno:08d}"
            try:
                rec = loads(line)  # nesting too deep is a ValueError too
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                counter.add(SkipReason.BAD_JSON, key, str(e))
                continue
            key = str(rec.pop("key", key)).replace(".", "_").replace("/", "_")
            images = rec.pop("images", []) or []
            sample: dict[str, Any] = {"__key__": key, "json": rec}
            try:
                for i, rel in enumerate(images):
                    ext = os.path.splitext(str(rel))[1].lower().lstrip(".")
                    if ext not in IMAGE_EXTENSIONS:
                        raise BadSample(SkipReason.BAD_IMAGE, f"{rel}: extension not in {IMAGE_EXTENSIONS}", key)
                    sample[f"{i}.{'jpg' if ext == 'jpeg' else ext}"] = image_bytes(str(rel), image_root)
                parse_sample(sample, decode_images=True)
            except BadSample as e:
                counter.add(e.reason, key, e.detail)
                continue
            yield sample


def build_shards(jsonl: str | Path, image_root: str | Path, out_dir: str | Path, shard_size: int = 1000,
                 prefix: str = "shard", progress: bool = True) -> Report:
    """Validate every JSONL record (images decoded once) and write the good ones to shards."""
    report = Report()
    with ShardWriter(out_dir, prefix, shard_size) as w:
        for sample in tqdm(_records(jsonl, Path(image_root), report.skipped), "build", unit="sample", disable=not progress):
            w.write(sample)
            report.good += 1
    report.shards = [str(p) for p in w.paths]
    log.info("built %s", report.summary())
    return report


def shard_urls(specs: str | list[str]) -> list[str]:
    """Shards named by files, globs, brace patterns or folders; a folder gives every .tar below it
    (a `dsvl-data convert` output holds `multimodal/` and `text/`). A one-line DataError if none."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    urls = [u for s in specs for u in (sorted(glob.glob(os.path.join(s, "**", "*.tar"), recursive=True))
                                       if os.path.isdir(s) else expand_urls(s))]
    missing = [u for u in urls if "://" not in u and not os.path.isfile(u)]
    if not urls or missing:
        raise DataError(f"no shards at {(missing or specs)[0]!r}")
    return urls


def validate_shards(urls: str | list[str], progress: bool = True, encoder: Any | None = None,
                    fmt: str = "dsvl") -> Report:
    """Read shards as training would (tar integrity, schema, images; token length too when an
    `encoder` (SampleEncoder) is given) and count bad samples per reason; `fmt` is the shards'
    layout (`dsvl`, or `caption` for img2dataset tars)."""
    report = Report(shards=shard_urls(urls))
    encoder = encoder.for_format(fmt) if encoder is not None else None

    check = encoder or (lambda raw: parse_sample(caption_to_raw(raw) if fmt == "caption" else raw, decode_images=True))
    raws = (raw for url in report.shards for raw in read_tar(url, report.skipped))
    report.good = sum(1 for _ in report.skipped.parsed(tqdm(raws, "validate", unit="sample", disable=not progress), check))
    log.info("validated %s", report.summary())
    return report
