"""MMBench / MMBench-CN TSV (VLMEvalKit layout): base64 images, options A-D (some empty), hint,
circular copies (index >= 1e6) grouped by `index % 1e6`."""
from __future__ import annotations

import ast
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsvl.data.bad_samples import BadSample
from dsvl.data.convert.media import b64_image
from dsvl.errors import DataError

from .base import LETTERS, BenchSkip, Question, answer_index, bad_row, is_missing, questions, with_images_first

REQUIRED = ("index", "question", "answer", "image")
CIRCULAR_OFFSET = 1_000_000
REFERENCE_MAX_CHARS = 64  # VLMEvalKit: an image cell this short holds another row's index, not base64


def _images(cell: Any, rows_by_index: dict[str, dict[str, Any]], key: str) -> list[bytes]:
    if is_missing(cell):
        raise bad_row(key, "empty image cell", BenchSkip.MISSING_IMAGE)
    cell = str(cell).strip()
    if len(cell) <= REFERENCE_MAX_CHARS:
        target = rows_by_index.get(cell)
        if target is None or len(str(target.get("image", ""))) <= REFERENCE_MAX_CHARS:
            raise bad_row(key, f"image refers to row {cell!r}, which has no image", BenchSkip.MISSING_IMAGE)
        cell = str(target["image"]).strip()
    if cell.startswith("["):
        try:
            items = ast.literal_eval(cell)
        except (ValueError, SyntaxError):
            raise bad_row(key, "image list is not a Python list string", BenchSkip.BAD_IMAGE) from None
        return [b64_image(str(v), key) for v in items]
    return [b64_image(cell, key)]


def read_mmbench(path: Path, images: Path | None = None, name: str = "mmbench") -> Iterator[Question | BadSample]:
    """Questions of an MMBench TSV, in file order (`images` is unused: images are in the file)."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = {c.lower(): c for c in reader.fieldnames or []}
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise DataError(f"benchmarks.{name}.path: {path} has no column {missing[0]!r} (an MMBench TSV has {', '.join(REQUIRED)}, A-D, ...)")
        rows = [{k.lower(): v for k, v in row.items() if k is not None} for row in reader]
    by_index = {str(r.get("index", "")).strip(): r for r in rows}
    yield from questions(((f"{path.name}:{row.get('index') or n}", row) for n, row in enumerate(rows)),
                         lambda key, row: _question(row, by_index, key))


def _question(row: dict[str, Any], by_index: dict[str, dict[str, Any]], key: str) -> Question:
    try:
        index = int(float(row["index"]))
    except (TypeError, ValueError):
        raise bad_row(key, f"index {row['index']!r} is not a number") from None
    if is_missing(row.get("question")):
        raise bad_row(key, "empty question")
    present = "".join(c for c in LETTERS[:4] if not is_missing(row.get(c.lower())))
    if len(present) < 2 or present != LETTERS[: len(present)]:
        raise bad_row(key, f"options {present or 'none'}: need at least A and B, without gaps")
    options = [str(row[c.lower()]) for c in present]
    answer = answer_index(row.get("answer"), len(options), key)
    pictures = _images(row.get("image"), by_index, key)
    text = str(row["question"]) if is_missing(row.get("hint")) else f"Hint: {row['hint']}\n{row['question']}"
    categories = {c: str(row[c]) for c in ("category", "l2-category") if not is_missing(row.get(c))}
    return Question(key=str(index), text=with_images_first(text, len(pictures)), options=options, answer=answer,
                    images=list(pictures), categories=categories, group=str(index % CIRCULAR_OFFSET))
