"""Input files -> records, streamed in bounded memory (docs/data_format.md, "Converting"): JSONL by line,
a JSON list record by record from 1 MiB chunks (`json.JSONDecoder.raw_decode`), parquet in row
batches, `.gz` / `.zip` / `.zst` on the fly. A line or record that does not parse is an `Unreadable`
item (counted as ``bad_json`` by the converter, never fatal).
"""
from __future__ import annotations

import gzip
import io
import itertools
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from dsvl.errors import DataError

CHUNK = 1 << 20
MAX_RECORD_CHARS = 256 << 20  # a "record" still open after this many characters is a broken list
_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class Unreadable:
    """An input item that could not be parsed (its line or list element), with the reason."""

    detail: str


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zip"):
        z = zipfile.ZipFile(path)
        members = [m for m in z.namelist() if not m.endswith("/")]
        if not members:
            raise DataError(f"{path}: empty zip archive")
        return z.open(members[0])
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst needs the zstandard package (pip install zstandard)") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # type: ignore[return-value]
    return open(path, "rb")


def _jsonl(f: Iterable[str]) -> Iterator[Any]:
    for line in f:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            yield Unreadable(f"line does not parse: {type(e).__name__}: {str(e).splitlines()[0][:120]}")


def _json_list(f: IO[str], buf: str) -> Iterator[Any]:
    """Elements of the JSON list whose text starts with `buf` (just after the opening '[')."""
    decoder = json.JSONDecoder()
    pos, eof = 0, False

    def more() -> bool:  # append at least a chunk (doubling, so a huge record is not re-parsed often)
        nonlocal buf, pos, eof
        chunk = f.read(max(CHUNK, len(buf) - pos))
        eof = not chunk
        buf, pos = buf[pos:] + chunk, 0
        return not eof

    def skip_ws() -> str:  # the next non-space character, '' at the end of the file
        nonlocal pos
        while True:
            pos = _WS.match(buf, pos).end()  # type: ignore[union-attr]
            if pos < len(buf) or not more():
                return buf[pos:pos + 1]

    if skip_ws() == "]":
        return
    while True:
        try:
            obj, end = decoder.raw_decode(buf, pos)
            if end == len(buf) and not eof and more():  # a number may continue in the next chunk
                continue
        except json.JSONDecodeError as e:
            if not eof and len(buf) - pos < MAX_RECORD_CHARS and more():
                continue
            yield Unreadable(f"JSON list breaks here ({str(e).splitlines()[0][:120]}); the rest is unreadable")
            return
        except RecursionError:
            yield Unreadable("JSON list element nested too deep; the rest is unreadable")
            return
        yield obj
        pos = end
        c = skip_ws()
        if c == "]":
            return
        if c != ",":
            yield Unreadable(f"JSON list expects ',' or ']', found {c!r}; the rest is unreadable")
            return
        pos += 1
        skip_ws()


def read_records(path: str | Path, what: str = "input") -> Iterator[Any]:
    """Records of one (existing) input file: a JSON list, JSONL (either may be compressed) or parquet."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":  # one record batch in memory at a time
        import pyarrow.parquet as pq

        try:
            reader = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not parquet
            raise DataError(f"{what}: cannot read {path} as parquet ({' '.join(str(e).split())[:200]})") from None
        for batch in reader.iter_batches(batch_size=256):
            yield from batch.to_pylist()
        return
    with io.TextIOWrapper(_open_binary(path), encoding="utf-8", errors="replace", newline="") as f:
        head = f.read(CHUNK)
        start = _WS.match(head).end()  # type: ignore[union-attr]
        if head[start:start + 1] == "[":
            yield from _json_list(f, head[start + 1:])
            return
        # JSONL: the chunk read so far (finished to its line end), then the other lines
        yield from _jsonl(itertools.chain(io.StringIO(head + f.readline()), f))  # type: ignore[arg-type]
