"""Row sources shared by the readers: the files of a path, JSON lines, parquet rows."""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dsvl.data.bad_samples import BadSample
from dsvl.errors import DataError

from .base import bad_row


def benchmark_files(path: str | Path, suffixes: Sequence[str], name: str) -> list[Path]:
    """`path` itself, or the files with these suffixes under a directory (sorted); a `DataError` when none."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() not in suffixes:
            raise DataError(f"benchmarks.{name}.path: {p} is not a {'/'.join(suffixes)} file")
        return [p]
    found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes) if p.is_dir() else []
    if not found:
        raise DataError(f"benchmarks.{name}.path: no {'/'.join(suffixes)} file at {p}")
    return found


def json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadSample]]:
    """(key, object) per non-empty line; a line that is not a JSON object comes as a `BadSample`."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            key = f"{path.name}:{n + 1}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield key, bad_row(key, f"not JSON ({e.msg})")
                continue
            yield key, obj if isinstance(obj, dict) else bad_row(key, "a line that is not a JSON object")


def parquet_rows(path: Path, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, row dict) of a parquet file, one record batch in memory at a time."""
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not parquet
        raise DataError(f"benchmarks.{name}.path: cannot read {path} as parquet ({' '.join(str(e).split())[:200]})") from None
    n = 0
    for batch in reader.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            yield f"{path.name}:{n}", row
            n += 1
