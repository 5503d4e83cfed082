"""Plain text corpora (the Pile, FineWeb: JSONL or parquet): `text` -> a dsvl text document."""
from __future__ import annotations

from typing import Any

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.convert.common import Draft, Options, record_id


def draft(record: dict[str, Any], opts: Options) -> Draft:
    text = record["text"]
    if not isinstance(text, str):
        raise BadSample(SkipReason.BAD_JSON, f"'text' is a {type(text).__name__}, not a string")
    return Draft(text=text, meta=record_id(record))
