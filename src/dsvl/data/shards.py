"""Writing webdataset shards deterministically: webdataset's `ShardWriter` with a fixed mtime,
owner and mode and sorted member order, so the same samples give byte-identical shards."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import webdataset as wds

log = logging.getLogger(__name__)


def _encode(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")


class ShardWriter:
    """Writes samples ``{"__key__": str, field: bytes | str | json-able}`` to ``{prefix}-{i:06d}.tar``.

    A new shard starts every `max_count` samples or when the current one exceeds 1 GiB. The folder
    and the first shard are made on the first sample (webdataset's writer opens one at once: no empty shards).
    """

    def __init__(self, out_dir: str | Path, prefix: str = "shard", max_count: int = 1000) -> None:
        self.out_dir, self.prefix, self.max_count = Path(out_dir), prefix, max_count
        self.paths: list[Path] = []
        self._writer: wds.ShardWriter | None = None

    def write(self, sample: Mapping[str, Any]) -> None:
        key = sample["__key__"]
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/' (webdataset splits on the first dot)")
        if self._writer is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._writer = wds.ShardWriter(
                str(self.out_dir / f"{self.prefix}-%06d.tar"), maxcount=self.max_count, maxsize=1 << 30,
                post=lambda name: self.paths.append(Path(name)), verbose=0,
                encoder=False, mtime=0, user="dsvl", group="dsvl", mode=0o644)
        self._writer.write({"__key__": key, **{k: _encode(v) for k, v in sample.items() if not k.startswith("__")}})

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_shards(samples: Iterable[Mapping[str, Any]], out_dir: str | Path, prefix: str = "shard",
                 max_count: int = 1000) -> list[Path]:
    """Write all `samples` and return the shard paths."""
    with ShardWriter(out_dir, prefix, max_count) as w:
        for s in samples:
            w.write(s)
    return w.paths
