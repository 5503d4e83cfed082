"""Small benchmark files in each public layout (FORMATS.md §8-13), written by the tests themselves.

Each writer returns the number of usable questions and the skips its bad rows must produce, so
the tests compare the readers' counts with what was written.
"""
from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from dsvl.data.chat import IMAGE_TOKEN

COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40), (200, 40, 200)]


def png(i: int, size: tuple[int, int] = (40, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLORS[i % len(COLORS)]).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category",
                   "comment", "split"]


def mmbench_row(index: int, question: str, options: list[str], answer: str, image: str, category: str = "attr",
                hint: str = "nan", l2: str = "perception") -> dict[str, Any]:
    cells = dict(zip("ABCD", options + ["nan"] * (4 - len(options))))
    return {"index": index, "question": question, "hint": hint, **cells, "answer": answer, "category": category,
            "image": image, "source": "src", "l2-category": l2, "comment": "nan", "split": "dev"}


def write_tsv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, MMBENCH_COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_mmbench(path: Path) -> dict[str, Any]:
    """5 questions (2 with circular copies: 7 usable rows), one by image reference, 2 options in one;
    skips: an empty image cell, an answer letter that names no option, an index that is no number."""
    rows = [
        mmbench_row(0, "Which color?", ["red", "green", "blue", "yellow"], "A", b64(png(0)), hint="Look closely."),
        mmbench_row(1, "Is it round?", ["yes", "no"], "B", b64(png(1)), category="shape", l2="reasoning"),
        mmbench_row(2, "Which shape?", ["square", "circle", "triangle"], "C", "0", category="shape"),  # image of row 0
        mmbench_row(3, "How many?", ["one", "two", "three", "four"], "D", b64(png(3)), category="count"),
        mmbench_row(4, "Which one?", ["left", "right"], "A", b64(png(4)), category="count", l2="reasoning"),
        mmbench_row(5, "No image", ["a", "b"], "A", "nan"),
        mmbench_row(6, "Bad answer", ["a", "b"], "E", b64(png(0))),
        {**mmbench_row(7, "Bad index", ["a", "b"], "A", b64(png(0))), "index": "seven"},
        # circular copies: options rotated, answer follows
        mmbench_row(1_000_000, "Which color?", ["green", "blue", "yellow", "red"], "D", b64(png(0)), hint="Look closely."),
        mmbench_row(1_000_001, "Is it round?", ["no", "yes"], "A", b64(png(1)), category="shape", l2="reasoning"),
    ]
    write_tsv(path, rows)
    return {"rows": 7, "questions": 5, "skipped": {"missing_image": 1, "malformed_row": 2}}


def write_seed(root: Path) -> dict[str, Any]:
    """SEED JSON + image root: 3 image questions (one image id without ".jpg"), a missing image, a video question."""
    images = root / "cc3m"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"img{i}.jpg").write_bytes(png(i))
    q = lambda i, data_id, **kw: {"answer": "ABCD"[i % 4], "choice_a": "one", "choice_b": "two", "choice_c": "three",  # noqa: E731
                                  "choice_d": "four", "data_id": data_id, "data_type": "image", "question": f"How many {i}?",
                                  "question_id": str(100 + i), "question_type_id": 1 + i % 2, **kw}
    data = {"questions": [q(0, "img0.jpg"), q(1, "img1"), q(2, "img2.jpg"), q(3, "gone.jpg"),
                          q(4, "v.mp4", data_type="video", question_type_id=10)],
            "question_type": {"Scene Understanding": 1, "Instance Identity": 2, "Action Recognition": 10}}
    (root / "seed.json").write_text(json.dumps(data))
    return {"path": root / "seed.json", "images": images, "questions": 3, "skipped": {"missing_image": 1, "video_question": 1}}


def write_pope(root: Path) -> dict[str, Any]:
    """POPE JSONL (".json", as AoiDragon/POPE names it): 4 questions, a broken line, a missing image."""
    images = root / "val2014"
    images.mkdir(parents=True)
    lines = []
    for i, label in enumerate(["yes", "no", "yes", "no"]):
        (images / f"COCO_{i}.jpg").write_bytes(png(i))
        lines.append(json.dumps({"question_id": i, "image": f"COCO_{i}.jpg", "text": f"Is there a thing {i}?", "label": label}))
    lines.append("{not json")
    lines.append(json.dumps({"question_id": 9, "image": "COCO_gone.jpg", "text": "Is there a dog?", "label": "yes"}))
    path = root / "coco_pope_random.json"
    path.write_text("\n".join(lines) + "\n")
    return {"path": path, "images": images, "questions": 4, "skipped": {"malformed_row": 1, "missing_image": 1}}


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_mmmu(path: Path) -> dict[str, Any]:
    """MMMU parquet (datasets' Image columns): 2 multiple-choice (one with two images, one tag only in an
    option), 1 open question; skips: a tag without its image, options that are no list string."""
    def row(i: int, question: str, options: str, answer: str, images: dict[int, bytes], qtype: str = "multiple-choice") -> dict:
        cells = {f"image_{n}": ({"bytes": images[n], "path": f"{n}.png"} if n in images else None) for n in range(1, 8)}
        return {"id": f"validation_Art_{i}", "question": question, "options": options, "explanation": "", **cells,
                "img_type": "['Paintings']", "answer": answer, "topic_difficulty": "Easy", "question_type": qtype,
                "subfield": "Art" if i % 2 else "Design"}
    rows = [
        row(1, "Style of <image 1> and <image 2>?", "['Baroque', 'Gothic', 'Modern']", "B", {1: png(0), 2: png(1)}),
        row(2, "Which one is it?", "['<image 1>', 'none']", "A", {1: png(2)}),
        row(3, "Year of <image 1>?", "[]", "1850", {1: png(3)}, qtype="open"),
        row(4, "What is <image 2>?", "['a', 'b']", "A", {1: png(0)}),
        row(5, "Broken options <image 1>", "not a list", "A", {1: png(0)}),
    ]
    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.string()), ("explanation", pa.string()),
                        *[(f"image_{n}", IMAGE_STRUCT) for n in range(1, 8)], ("img_type", pa.string()), ("answer", pa.string()),
                        ("topic_difficulty", pa.string()), ("question_type", pa.string()), ("subfield", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return {"questions": 3, "multiple_choice": 2, "skipped": {"missing_image": 1, "malformed_row": 1}}


def write_hellaswag(path: Path) -> dict[str, Any]:
    rows = [{"ind": 1, "activity_label": "Roof", "ctx_a": "A man sits.", "ctx_b": "he", "ctx": "A man sits. he",
             "label": 2, "endings": ["runs.", "eats.", "sleeps [title] now.", "reads."]},
            {"ind": 2, "activity_label": "Cooking", "ctx": "She cooks.", "label": "0", "endings": ["stirs.", "flies.", "swims.", "sings."]},
            {"ind": 3, "activity_label": "Test", "ctx": "Unlabelled.", "label": "", "endings": ["a", "b", "c", "d"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"questions": 2, "skipped": {"malformed_row": 1}}


def write_mmlu_csv(root: Path) -> dict[str, Any]:
    """hendrycks/test layout: data/test/{subject}_test.csv without a header."""
    (root / "test").mkdir(parents=True)
    with (root / "test" / "algebra_test.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["2+2=?", "3", "4", "5", "6", "B"], ["1+1=?", "2", "3", "4", "5", "A"], ["bad", "x"]])
    with (root / "test" / "virology_test.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["A virus is?", "alive", "small", "big", "blue", "B"]])
    return {"questions": 3, "skipped": {"malformed_row": 1}, "subjects": {"algebra": 2, "virology": 1}}


def write_mmlu_parquet(path: Path) -> dict[str, Any]:
    """cais/mmlu layout: question, subject, choices (list), answer (0-3)."""
    rows = [{"question": "2+2=?", "subject": "algebra", "choices": ["3", "4", "5", "6"], "answer": 1},
            {"question": "A virus is?", "subject": "virology", "choices": ["alive", "small", "big", "blue"], "answer": 1}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return {"questions": 2}


def write_text(path: Path) -> dict[str, Any]:
    """Pile-test layout: {"text", "meta"} lines; one empty document."""
    docs = [{"text": "The cat sat on the mat. " * 6, "meta": {"pile_set_name": "Pile-CC"}},
            {"text": "A red square is left of a blue circle.", "meta": {"pile_set_name": "Wiki"}},
            {"text": "  ", "meta": {}}]
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    return {"questions": 2, "skipped": {"malformed_row": 1}}


def mc_sample_to_mmbench(index: int, sample: dict[str, Any]) -> dict[str, Any]:
    """A dsvl MC shard sample (demo `mc` set) as an MMBench row with the same question, image and options."""
    meta = sample["json"]
    question = meta["conversation"][-1]["content"].replace(IMAGE_TOKEN, "")
    return mmbench_row(index, question, meta["options"], "ABCD"[meta["answer"]], b64(sample["0.png"]), category=meta["category"])
