"""SEED-Bench v1 JSON (`questions[]`, `choice_a..d`, `data_id` under the image root); image questions only."""
from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from dsvl.data.bad_samples import BadSample
from dsvl.errors import DataError

from .base import BenchSkip, Question, answer_index, bad_row, image_root, is_missing, questions, with_images_first

CHOICES = ("choice_a", "choice_b", "choice_c", "choice_d")


def read_seed(path: Path, images: Path | None = None, name: str = "seed") -> Iterator[Question | BadSample]:
    """Image questions of a SEED-Bench JSON; video questions (dimensions 10-12) are counted skips."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"benchmarks.{name}.path: {path} is not a JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise DataError(f"benchmarks.{name}.path: {path} has no 'questions' list (SEED-Bench layout)")
    root = image_root(images, path, name)
    types = {str(v): str(k) for k, v in (data.get("question_type") or {}).items()}
    keyed = ((str(item.get("question_id", n)) if isinstance(item, dict) else str(n), item) for n, item in enumerate(data["questions"]))
    yield from questions(keyed, partial(_question, root, types))


def _question(root: Path, types: dict[str, str], key: str, item: Any) -> Question:
    if not isinstance(item, dict):
        raise bad_row(key, "a question that is not a JSON object")
    if item.get("data_type", "image") != "image":
        raise bad_row(key, f"data_type {item.get('data_type')!r}", BenchSkip.VIDEO_QUESTION)
    if is_missing(item.get("question")) or is_missing(item.get("data_id")):
        raise bad_row(key, "no question or data_id")
    options = [str(item[c]) for c in CHOICES if not is_missing(item.get(c))]
    if len(options) < 2:
        raise bad_row(key, "fewer than 2 choices")
    type_id = str(item.get("question_type_id", ""))
    image = root / str(item["data_id"])
    if not image.is_file() and not image.suffix:  # some SEED copies store ids without the extension
        image = image.with_name(image.name + ".jpg")
    return Question(key=key, text=with_images_first(str(item["question"]), 1), options=options,
                    answer=answer_index(item.get("answer"), len(options), key), images=[image],
                    categories={"question_type": types.get(type_id, type_id or "default")})
