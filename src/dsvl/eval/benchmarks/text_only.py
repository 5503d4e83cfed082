"""Language-retention sets without images: HellaSwag (JSONL), MMLU (HF parquet / JSONL and the
headerless hendrycks CSV), and a plain-text corpus for perplexity (Pile-test JSONL, parquet)."""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsvl.data.bad_samples import BadSample

from .base import Question, answer_index, bad_row, benchmark_files, dict_rows, is_missing, questions

MMLU_SPLITS = re.compile(r"_(test|dev|val|validation|auxiliary_train)$")


def hellaswag_text(text: str) -> str:
    """lm-evaluation-harness's cleaning of WikiHow markers ("[title]", "[step]", ...)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _hellaswag(key: str, row: dict[str, Any]) -> Question:
    ctx = row.get("ctx") if not is_missing(row.get("ctx")) else f"{row.get('ctx_a', '')} {row.get('ctx_b', '')}".strip()
    endings, label = row.get("endings"), str(row.get("label", "")).strip()
    if not ctx or not isinstance(endings, list) or len(endings) < 2 or not label.isdigit() or int(label) >= len(endings):
        raise bad_row(key, "needs ctx, a list of endings and a label (unlabelled test rows cannot be scored)")
    return Question(key=str(row.get("ind", key)), text=hellaswag_text(str(ctx)), options=[hellaswag_text(str(e)) for e in endings],
                    answer=int(label), categories={"activity": str(row.get("activity_label") or "default")})


def read_hellaswag(path: Path, images: Path | None = None, name: str = "hellaswag") -> Iterator[Question | BadSample]:
    """Context -> 4 endings; `label` int (rowanz jsonl) or string (HF Rowan/hellaswag)."""
    for file in benchmark_files(path, (".jsonl", ".json", ".parquet"), name):
        yield from questions(dict_rows(file, name), _hellaswag)


def _mmlu_csv(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadSample]]:
    """hendrycks/test `{subject}_{split}.csv`: no header, question,A,B,C,D,letter."""
    subject = MMLU_SPLITS.sub("", path.stem)
    with path.open(encoding="utf-8", newline="") as f:
        for n, cells in enumerate(csv.reader(f)):
            key = f"{path.name}:{n + 1}"
            if len(cells) < 4:
                yield key, bad_row(key, f"{len(cells)} columns; expected question, options, answer letter")
                continue
            yield key, {"question": cells[0], "choices": cells[1:-1], "answer": cells[-1], "subject": subject}


def _mmlu(key: str, row: dict[str, Any]) -> Question:
    choices, answer = row.get("choices"), row.get("answer")
    if is_missing(row.get("question")) or not isinstance(choices, list) or len(choices) < 2:
        raise bad_row(key, "needs a question and a list of choices")
    if not isinstance(answer, int):
        answer = answer_index(answer, len(choices), key)
    if not 0 <= answer < len(choices):
        raise bad_row(key, f"answer {answer} is not one of {len(choices)} choices")
    return Question(key=key, text=str(row["question"]), options=[str(c) for c in choices], answer=answer,
                    categories={"subject": str(row.get("subject") or "default")})


def read_mmlu(path: Path, images: Path | None = None, name: str = "mmlu") -> Iterator[Question | BadSample]:
    """MMLU questions: cais/mmlu parquet / JSONL (`choices`, `answer` 0-3, `subject`) or the CSV files."""
    for file in benchmark_files(path, (".csv", ".parquet", ".jsonl"), name):
        yield from questions(_mmlu_csv(file) if file.suffix == ".csv" else dict_rows(file, name), _mmlu)


def _document(key: str, row: dict[str, Any]) -> Question:
    if not isinstance(row.get("text"), str) or not row["text"].strip():
        raise bad_row(key, "no text")
    return Question(key=key, text=row["text"], kind="text")


def read_text_ppl(path: Path, images: Path | None = None, name: str = "text_ppl") -> Iterator[Question | BadSample]:
    """Documents (`text`) of JSONL / parquet files, e.g. the Pile test set; scored by perplexity."""
    for file in benchmark_files(path, (".jsonl", ".json", ".parquet"), name):
        yield from questions(dict_rows(file, name), _document)
