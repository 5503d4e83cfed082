"""POPE JSONL (`question_id`, `image`, `text`, `label` yes/no; also `question` / `answer`) under an image root.

A directory of the random / popular / adversarial files is one benchmark with the file name as
the category (unless rows carry their own `category`).
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from dsvl.data.bad_samples import BadSample

from .base import Question, bad_row, benchmark_files, dict_rows, image_root, is_missing, questions, with_images_first

YES_NO = ["yes", "no"]


def read_pope(path: Path, images: Path | None = None, name: str = "pope") -> Iterator[Question | BadSample]:
    """Yes/no questions: options ["yes", "no"], answer 0 for "yes"."""
    files = benchmark_files(path, (".json", ".jsonl"), name)
    root = image_root(images, files[0], name)
    for file in files:
        yield from questions(dict_rows(file, name), partial(_question, root, file.stem))


def _question(root: Path, stem: str, key: str, row: dict[str, Any]) -> Question:
    text, label = row.get("text", row.get("question")), str(row.get("label", row.get("answer", ""))).strip().lower()
    if is_missing(text) or is_missing(row.get("image")) or label not in YES_NO:
        raise bad_row(key, "needs text (or question), image and label (or answer) yes/no")
    return Question(key=f"{stem}:{row.get('question_id', key)}", text=with_images_first(str(text), 1), kind="yesno",
                    options=list(YES_NO), answer=YES_NO.index(label), images=[root / str(row["image"])],
                    categories={"category": str(row.get("category") or stem)})
