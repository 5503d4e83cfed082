"""What every benchmark reader yields, and reads with: a `Question` (text, image references, options, answer,
categories) or a `BadSample` for a row that cannot be used, so the caller counts and skips it.

Images stay references (bytes or a path) until a question is scored: every rank reads the whole
file to agree on the question order, but decodes only the images of its own questions.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from dsvl.data.bad_samples import BadSample
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.data.convert.inputs import Unreadable, read_records
from dsvl.errors import DataError

Kind = Literal["mc", "yesno", "open", "text"]
ImageRef = bytes | Path
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class BenchSkip(str, Enum):
    """Why a benchmark row was not scored (stable names in reports, next to `SkipReason`'s)."""

    MALFORMED_ROW = "malformed_row"  # a row without the layout's fields, or with values of the wrong type
    MISSING_IMAGE = "missing_image"  # an image file that is not under the image root, or an empty image cell
    BAD_IMAGE = "bad_image"  # image bytes that do not decode
    VIDEO_QUESTION = "video_question"  # SEED-Bench dimensions 10-12: dsvl scores image questions only
    OPEN_QUESTION = "open_question"  # an MMMU open question in a perplexity mode (it has no options to score)


@dataclass
class Question:
    """One benchmark item: `text` the user turn (a placeholder per image, in `images` order); `answer`
    the right option's index, or an open question's reference; `group` joins MMBench's circular
    copies (right only when all are); `categories` maps a field (category, subject) to its value.
    """

    key: str
    text: str
    kind: Kind = "mc"
    options: list[str] = field(default_factory=list)
    answer: int | str | None = None
    images: list[ImageRef] = field(default_factory=list)
    categories: dict[str, str] = field(default_factory=dict)
    group: str = ""

    def __post_init__(self) -> None:
        self.group = self.group or self.key


def questions(rows: Iterable[tuple[str, Any]], make: Callable[[str, Any], Question]) -> Iterator[Question | BadSample]:
    """`make(key, row)` of every row; a row that is a `BadSample` already, or whose `make` raises one, comes as it."""
    for key, row in rows:
        try:
            yield row if isinstance(row, BadSample) else make(key, row)
        except BadSample as e:
            yield e


def bad_row(key: str, detail: str, reason: BenchSkip = BenchSkip.MALFORMED_ROW) -> BadSample:
    return BadSample(reason, detail, key)  # type: ignore[arg-type]  # BadSample reads only `.value`


def is_missing(value: Any) -> bool:
    """An empty cell: None, NaN, "" or the "nan" pandas writes into TSVs."""
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or isinstance(value, str) and value.strip().lower() in ("", "nan", "none")


def with_images_first(text: str, num_images: int) -> str:
    """Images without placeholders in the text go before it (what VLMEvalKit does)."""
    return IMAGE_TOKEN * num_images + text


def load_image(ref: ImageRef, key: str) -> Image.Image:
    """An RGB image from bytes or a file; `BadSample` (missing / undecodable) otherwise."""
    if isinstance(ref, Path) and not ref.is_file():
        raise bad_row(key, f"no image file {ref}", BenchSkip.MISSING_IMAGE)
    try:
        with Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise bad_row(key, f"undecodable image ({e})", BenchSkip.BAD_IMAGE) from None


def image_root(images: str | Path | None, path: Path, name: str) -> Path:
    """The directory image paths are relative to: `images=`, else the benchmark file's folder."""
    root = Path(images).expanduser() if images else path.parent
    if not root.is_dir():
        raise DataError(f"benchmarks.{name}.images: no directory {root}")
    return root


def answer_index(letter: Any, num_options: int, key: str) -> int:
    """The option index of an answer letter ("B" -> 1) that must name one of the options."""
    text = str(letter).strip().upper() if not is_missing(letter) else ""
    if len(text) != 1 or text not in LETTERS[:num_options]:
        raise bad_row(key, f"answer {letter!r} is not one of the letters {LETTERS[:num_options]}")
    return LETTERS.index(text)


def benchmark_files(path: str | Path, suffixes: Sequence[str], name: str) -> list[Path]:
    """`path` itself, or the files with these suffixes under a directory (sorted); a `DataError` when none."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() not in suffixes:
        raise DataError(f"benchmarks.{name}.path: {p} is not a {'/'.join(suffixes)} file")
    found = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
    if not found:
        raise DataError(f"benchmarks.{name}.path: no {'/'.join(suffixes)} file at {p}")
    return found


def dict_rows(path: Path, name: str) -> Iterator[tuple[str, dict[str, Any] | BadSample]]:
    """(key, row) of a parquet, JSON lines or JSON list file (`convert.inputs.read_records`, streamed);
    a record that does not parse or is not a JSON object comes as a `BadSample`."""
    for n, row in enumerate(read_records(path, f"benchmarks.{name}.path")):
        key = f"{path.name}:{n}"
        if isinstance(row, Unreadable) or not isinstance(row, dict):
            row = bad_row(key, row.detail if isinstance(row, Unreadable) else "a record that is not a JSON object")
        yield key, row
