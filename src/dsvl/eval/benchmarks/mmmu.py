"""MMMU parquet: `<image N>` tags, `options` as a Python list string, `image_1..image_7` bytes,
multiple-choice (letter answer) and open questions, `subfield` categories."""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsvl.data.bad_samples import BadSample
from dsvl.data.chat import IMAGE_TOKEN

from .base import BenchSkip, ImageRef, Question, answer_index, bad_row, benchmark_files, dict_rows, is_missing, questions

TAG = re.compile(r"<image (\d+)>")


def _options(value: Any, key: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        options = ast.literal_eval(str(value)) if not is_missing(value) else []
    except (ValueError, SyntaxError):
        raise bad_row(key, "options is not a Python list string") from None
    if not isinstance(options, list):
        raise bad_row(key, "options is not a list")
    return [str(o) for o in options]


def _image(cell: Any, key: str, n: int) -> ImageRef:
    """A parquet image cell: {"bytes", "path"} (datasets' Image feature) or raw bytes."""
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not isinstance(data, bytes | bytearray) or not data:
        raise bad_row(key, f"<image {n}> has no image_{n}", BenchSkip.MISSING_IMAGE)
    return bytes(data)


def place_images(question: str, options: list[str], row: dict[str, Any], key: str) -> tuple[str, list[ImageRef]]:
    """The question with each tag's first mention replaced by a placeholder, and the images in placeholder order.

    Images named only in the options go before the question; later mentions stay as text.
    """
    in_question = list(dict.fromkeys(int(m) for m in TAG.findall(question)))
    in_options = [n for n in dict.fromkeys(int(m) for o in options for m in TAG.findall(o)) if n not in in_question]
    for n in in_question:
        question = question.replace(f"<image {n}>", IMAGE_TOKEN, 1)
    order = in_options + in_question
    return IMAGE_TOKEN * len(in_options) + question, [_image(row.get(f"image_{n}"), key, n) for n in order]


def read_mmmu(path: Path, images: Path | None = None, name: str = "mmmu") -> Iterator[Question | BadSample]:
    """Questions of MMMU parquet files (a file, or a directory of subject / split files)."""
    for file in benchmark_files(path, (".parquet",), name):
        yield from questions(((str(row.get("id") or key), row) for key, row in dict_rows(file, name)), _question)


def _question(key: str, row: dict[str, Any]) -> Question:
    if is_missing(row.get("question")) or is_missing(row.get("answer")):
        raise bad_row(key, "no question or answer")
    options = _options(row.get("options"), key)
    text, refs = place_images(str(row["question"]), options, row, key)
    categories = {"subfield": str(row.get("subfield") or "default")}
    if row.get("question_type", "multiple-choice") == "open" or not options:
        return Question(key=key, text=text, kind="open", answer=str(row["answer"]), images=refs, categories=categories)
    return Question(key=key, text=text, options=options, answer=answer_index(row["answer"], len(options), key), images=refs,
                    categories=categories)
