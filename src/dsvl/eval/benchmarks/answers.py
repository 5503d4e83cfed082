"""Answers parsed from generated text, as the common toolkits do it: an option letter (or an
option's text), yes / no, and normalised matching of open answers (MMMU)."""
from __future__ import annotations

import ast
import re
import string
from collections.abc import Sequence

from .base import LETTERS

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_LETTER = re.compile(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z])")
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_letter(text: str, options: Sequence[str]) -> int | None:
    """The option a reply names: its first stand-alone letter among the options' ("B", "(B)", "B."),
    else the only option whose text it contains; None when it names none."""
    valid = LETTERS[: len(options)]
    for match in _LETTER.finditer(text):
        if match.group(1) in valid:
            return valid.index(match.group(1))
    reply = normalise(text)
    hits = [i for i, option in enumerate(options) if normalise(option) and normalise(option) in reply]
    return hits[0] if len(hits) == 1 else None


def parse_yes_no(text: str) -> int | None:
    """0 for a reply whose first yes/no word is "yes", 1 for "no" (the POPE options' order), else None."""
    match = _YES_NO.search(text)
    return None if match is None else ["yes", "no"].index(match.group(1).lower())


def normalise(text: str) -> str:
    """Lower case without punctuation, articles and extra spaces (SQuAD-style answer matching)."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def open_answer_matches(reply: str, reference: str) -> bool:
    """An open reply is right when, normalised, it equals or contains a reference answer (numbers
    compared as numbers). MMMU stores several accepted answers as a list string."""
    try:
        refs = ast.literal_eval(reference) if reference.strip().startswith("[") else [reference]
    except (ValueError, SyntaxError):
        refs = [reference]
    said = normalise(reply)
    number = _as_number(reply)
    for ref in map(str, refs):
        target, ref_number = normalise(ref), _as_number(ref)
        if (ref_number is not None and number is not None and abs(number - ref_number) < 1e-6) or (target and (said == target or f" {target} " in f" {said} ")):
            return True
    return False
