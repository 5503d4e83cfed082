"""Per-question records of all ranks -> the report of one benchmark: accuracy over questions (a circular
MMBench question is right only when all its copies are), per category, POPE's yes/no metrics,
perplexity for text corpora, skips by reason."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    """What scoring one question (one circular copy, one document) gave."""

    group: str
    kind: str
    correct: bool = False
    predicted: int | None = None  # the chosen option; None: a generated reply that named none
    answer: int | str | None = None
    categories: dict[str, str] = field(default_factory=dict)
    nll_sum: float = 0.0  # text corpora: summed NLL and token count
    num_tokens: int = 0


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def _yes_no_metrics(records: list[Record]) -> dict[str, float]:
    """POPE: "yes" (option 0) is the positive class; a reply that says neither counts as "no"."""
    said_yes = [r.predicted == 0 for r in records]
    is_yes = [r.answer == 0 for r in records]
    tp = sum(p and a for p, a in zip(said_yes, is_yes))
    precision, recall = _ratio(tp, sum(said_yes)), _ratio(tp, sum(is_yes))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "yes_ratio": _ratio(sum(said_yes), len(records))}


def summarize(records: Iterable[Record], skipped: Mapping[str, int]) -> dict[str, Any]:
    """The report of one benchmark from the records of every rank."""
    records = list(records)
    report: dict[str, Any] = {"skipped": dict(sorted((k, v) for k, v in skipped.items() if v))}
    texts = [r for r in records if r.kind == "text"]
    if texts:
        nll, tokens = sum(r.nll_sum for r in texts), sum(r.num_tokens for r in texts)
        loss = nll / tokens if tokens else float("nan")
        report.update(perplexity=math.exp(loss) if tokens else float("nan"), loss=loss, num_tokens=tokens, num_samples=len(texts))
        return report
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    right = {g: all(r.correct for r in rows) for g, rows in groups.items()}
    report.update(accuracy=_ratio(sum(right.values()), len(groups)), num_samples=len(groups))
    if len(records) > len(groups):  # MMBench circular copies: also the plain per-row accuracy
        report.update(num_rows=len(records), row_accuracy=_ratio(sum(r.correct for r in records), len(records)))
    unparsed = sum(r.predicted is None for r in records)
    if unparsed:
        report["unparsed"] = unparsed
    yes_no = [r for r in records if r.kind == "yesno"]
    if yes_no:
        report.update(_yes_no_metrics(yes_no))
    hits: dict[tuple[str, str], list[bool]] = {}
    for g, rows in groups.items():
        for fld, value in rows[0].categories.items():
            hits.setdefault((fld, value), []).append(right[g])
    report["per_category"] = {}
    for (fld, value), ok in sorted(hits.items()):
        report["per_category"].setdefault(fld, {})[value] = {"accuracy": sum(ok) / len(ok), "num_samples": len(ok)}
    return report
