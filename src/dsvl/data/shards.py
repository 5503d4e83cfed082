"""Writing webdataset shards deterministically (fixed mtime/owner, so the same input gives the same bytes)."""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)


def _encode(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")


class ShardWriter:
    """Writes samples ``{"__key__": str, field: bytes | str | json-able}`` to ``{prefix}-{i:06d}.tar``.

    A new shard starts every `max_count` samples or when the current one exceeds `max_bytes`.
    """

    def __init__(self, out_dir: str | Path, prefix: str = "shard", max_count: int = 1000, max_bytes: int = 1 << 30) -> None:
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, got {max_count}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.paths: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._count = self._bytes = 0
        self.total = 0

    def _open(self) -> None:
        self.close()
        path = self.out_dir / f"{self.prefix}-{len(self.paths):06d}.tar"
        self.paths.append(path)
        self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)
        self._count = self._bytes = 0

    def write(self, sample: Mapping[str, Any]) -> None:
        key = sample["__key__"]
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/' (webdataset splits on the first dot)")
        if self._tar is None or self._count >= self.max_count or self._bytes >= self.max_bytes:
            self._open()
        assert self._tar is not None
        for name in sorted(k for k in sample if not k.startswith("__")):
            data = _encode(sample[name])
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "dsvl", "dsvl"
            self._tar.addfile(info, io.BytesIO(data))
            self._bytes += len(data) + 512
        self._count += 1
        self.total += 1

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

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
