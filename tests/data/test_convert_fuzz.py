"""Fuzzed records for every `dsvl-data convert` format: each record of the sample inputs with one random part
replaced by a hostile value (None, a number, an empty or nested list, a stray `<image>` run) or deleted.
The converter never stops: every record is written or counted as a skip with a reason."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any, Iterator

import pytest

from dsvl.data.convert import convert

from .convert_inputs import write_inputs

HOSTILE = [None, 0, -1, 1.5, "", "x", [], {}, [None], {"a": None}, True, "<image>" * 3, [[[]]], {"from": None},
           "red.png", ["red.png", 3]]
FORMATS = [("llava", "llava.json"), ("sharegpt", "sharegpt.json"), ("messages", "messages.jsonl"),
           ("mmc4", "mmc4.jsonl"), ("text", "text.jsonl")]


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _mutated(record: Any, rng: random.Random) -> Any:
    """`record` with one random part replaced by a hostile value, or deleted (a dict key, a list item)."""
    record = copy.deepcopy(record)
    paths = [p for p in _paths(record) if p]
    if not paths:
        return copy.deepcopy(rng.choice(HOSTILE))
    *parents, last = rng.choice(paths)
    node = record
    for key in parents:
        node = node[key]
    if rng.random() < 0.25:
        del node[last]
    else:
        node[last] = copy.deepcopy(rng.choice(HOSTILE))
    return record


def _records(path: Path) -> list[Any]:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):  # the inputs' own broken lines
            continue
    return records


@pytest.mark.parametrize("fmt, name", FORMATS)
def test_fuzzed_records_are_converted_or_counted(fmt: str, name: str, tmp_path: Path) -> None:
    write_inputs(tmp_path)
    rng = random.Random(fmt)
    fuzzed = [_mutated(r, rng) for r in _records(tmp_path / name) for _ in range(25)]
    path = tmp_path / f"fuzzed{Path(name).suffix}"
    text = json.dumps(fuzzed) if path.suffix == ".json" else "\n".join(json.dumps(r) for r in fuzzed) + "\n"
    path.write_text(text)
    report = convert(fmt, [str(path)], tmp_path / "out", images=tmp_path / "images", progress=False)
    assert report.records == len(fuzzed) == sum(report.good.values()) + report.skipped.total
    assert report.skipped.total > 0 and sum(report.good.values()) > 0  # the mutations hit both ways
