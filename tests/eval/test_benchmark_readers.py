"""The benchmark readers on small files in each public layout: questions, images, options, answers,
categories, circular groups, and bad rows counted as skips by reason (no model needed)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dsvl.data.bad_samples import BadSample
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.errors import ConfigError, DataError
from dsvl.eval.benchmarks import BenchmarkSpec, Question, Record, summarize
from dsvl.eval.benchmarks.answers import open_answer_matches, parse_letter, parse_yes_no
from dsvl.eval.benchmarks.base import load_image
from dsvl.eval.benchmarks.run import my_share

from . import bench_files as bf


def read(name: str, path: Path, images: Path | None = None, **kw) -> tuple[list[Question], dict[str, int]]:
    items = list(BenchmarkSpec(name=name, path=str(path), images=str(images) if images else None, **kw).questions())
    skips = Counter(i.reason.value for i in items if isinstance(i, BadSample))
    return [i for i in items if isinstance(i, Question)], dict(skips)


def test_mmbench_tsv(tmp_path: Path) -> None:
    expected = bf.write_mmbench(tmp_path / "MMBench_DEV_EN.tsv")
    questions, skipped = read("mmbench", tmp_path / "MMBench_DEV_EN.tsv")
    assert len(questions) == expected["rows"] and skipped == expected["skipped"]
    assert len({q.group for q in questions}) == expected["questions"]
    by_key = {q.key: q for q in questions}
    first, copy = by_key["0"], by_key["1000000"]
    assert first.group == copy.group == "0" and first.answer == 0 and copy.answer == 3
    assert first.text == IMAGE_TOKEN + "Hint: Look closely.\nWhich color?"
    assert first.categories == {"category": "attr", "l2-category": "perception"}
    assert by_key["1"].options == ["yes", "no"]  # C and D empty: a 2-option question
    assert by_key["2"].images == first.images and load_image(by_key["2"].images[0], "2").size == (40, 32)  # image by reference


def test_mmbench_circular_accuracy_needs_every_copy() -> None:
    records = [Record("0", "mc", True, 0, 0, {"category": "a"}), Record("0", "mc", False, 1, 3, {"category": "a"}),
               Record("1", "mc", True, 1, 1, {"category": "b"}), Record("1", "mc", True, 0, 0, {"category": "b"}),
               Record("2", "mc", True, 0, 0, {"category": "b"})]
    report = summarize(records, {"missing_image": 1, "too_long": 0})
    assert report["accuracy"] == pytest.approx(2 / 3) and report["num_samples"] == 3
    assert report["num_rows"] == 5 and report["row_accuracy"] == pytest.approx(4 / 5)
    assert report["per_category"] == {"category": {"a": {"accuracy": 0.0, "num_samples": 1}, "b": {"accuracy": 1.0, "num_samples": 2}}}
    assert report["skipped"] == {"missing_image": 1}


def test_pope_metrics_by_hand() -> None:
    # answers yes, yes, no, no, yes; predictions yes, no, yes, no, unparsed (counts as "no")
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1), (0, None)]
    records = [Record(str(i), "yesno", p == a, p, a) for i, (a, p) in enumerate(pairs)]
    report = summarize(records, {})
    assert report["accuracy"] == pytest.approx(2 / 5) and report["unparsed"] == 1
    assert report["precision"] == pytest.approx(1 / 2) and report["recall"] == pytest.approx(1 / 3)
    assert report["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)) and report["yes_ratio"] == pytest.approx(2 / 5)


def test_seed_json(tmp_path: Path) -> None:
    expected = bf.write_seed(tmp_path)
    questions, skipped = read("seed", expected["path"], expected["images"])
    # a missing image file is found (and counted) when its question is scored
    assert len(questions) == expected["questions"] + 1 and skipped == {"video_question": 1}
    assert not questions[3].images[0].exists()
    assert [q.answer for q in questions[:3]] == [0, 1, 2]
    assert questions[1].images[0].name == "img1.jpg"  # data_id without extension
    assert {q.categories["question_type"] for q in questions} == {"Scene Understanding", "Instance Identity"}
    assert all(q.text.startswith(IMAGE_TOKEN) for q in questions)


def test_pope_jsonl(tmp_path: Path) -> None:
    expected = bf.write_pope(tmp_path)
    questions, _ = read("pope", expected["path"], expected["images"])
    assert len(questions) == 5  # the missing image is found when its question is scored
    assert [q.answer for q in questions[:4]] == [0, 1, 0, 1] and questions[0].options == ["yes", "no"]
    assert questions[0].categories == {"category": "coco_pope_random"} and questions[0].kind == "yesno"
    with pytest.raises(BadSample, match="no image file"):
        load_image(questions[4].images[0], questions[4].key)



def test_pope_json_list_reads_like_its_lines(tmp_path: Path) -> None:
    """A `.json` benchmark file may be one JSON list (it was one malformed row when read by line)."""
    expected = bf.write_pope(tmp_path)
    lines = expected["path"].read_text().splitlines()
    listed = tmp_path / "listed" / "coco_pope_random.json"
    listed.parent.mkdir()
    listed.write_text("[" + ",\n".join(line for line in lines if not line.startswith("{not")) + "]")
    by_line, _ = read("pope", expected["path"], expected["images"])
    by_list, skipped = read("pope", listed, expected["images"])
    assert skipped == {} and [(q.key, q.text, q.answer, q.images) for q in by_list] == [
        (q.key, q.text, q.answer, q.images) for q in by_line]


def test_mmmu_parquet(tmp_path: Path) -> None:
    expected = bf.write_mmmu(tmp_path / "validation.parquet")
    questions, skipped = read("mmmu", tmp_path / "validation.parquet")
    assert len(questions) == expected["questions"] and skipped == expected["skipped"]
    two, in_option, open_q = questions
    assert two.text == f"Style of {IMAGE_TOKEN} and {IMAGE_TOKEN}?" and len(two.images) == 2 and two.answer == 1
    assert two.options == ["Baroque", "Gothic", "Modern"] and two.categories == {"subfield": "Art"}
    assert load_image(two.images[1], "x").getpixel((0, 0)) == bf.COLORS[1]  # image_2 in the second placeholder
    assert in_option.text == IMAGE_TOKEN + "Which one is it?" and len(in_option.images) == 1
    assert open_q.kind == "open" and open_q.answer == "1850" and open_q.options == []


def test_text_only_layouts(tmp_path: Path) -> None:
    hs = bf.write_hellaswag(tmp_path / "hellaswag_val.jsonl")
    questions, skipped = read("hellaswag", tmp_path / "hellaswag_val.jsonl")
    assert len(questions) == hs["questions"] and skipped == hs["skipped"]
    assert [q.answer for q in questions] == [2, 0] and questions[0].options[2] == "sleeps. now." and not questions[0].images
    csv_info = bf.write_mmlu_csv(tmp_path / "mmlu")
    questions, skipped = read("mmlu", tmp_path / "mmlu")
    assert len(questions) == csv_info["questions"] and skipped == csv_info["skipped"]
    assert Counter(q.categories["subject"] for q in questions) == csv_info["subjects"] and questions[0].answer == 1
    bf.write_mmlu_parquet(tmp_path / "test.parquet")
    questions, _ = read("mmlu", tmp_path / "test.parquet")
    assert [(q.options[q.answer], q.categories["subject"]) for q in questions] == [("4", "algebra"), ("small", "virology")]
    text = bf.write_text(tmp_path / "test.jsonl")
    questions, skipped = read("text_ppl", tmp_path / "test.jsonl", limit=3)
    assert len(questions) == text["questions"] and skipped == text["skipped"] and questions[0].kind == "text"


def test_shares_over_ranks_cover_every_row_once(tmp_path: Path) -> None:
    bf.write_mmbench(tmp_path / "mm.tsv")
    items = list(BenchmarkSpec(name="mmbench", path=str(tmp_path / "mm.tsv")).questions())
    shares = [my_share(items, rank, 3) for rank in range(3)]
    keys = [q.key for mine, _ in shares for q in mine]
    assert sorted(keys) == sorted(q.key for q in items if isinstance(q, Question))
    groups = [{q.group for q in mine} for mine, _ in shares]
    assert all(not (a & b) for i, a in enumerate(groups) for b in groups[i + 1:])  # copies stay with their question
    assert sum(skips.total for _, skips in shares) == 3


def test_answer_parsing() -> None:
    options = ["red", "green", "blue"]
    assert parse_letter("B", options) == 1 and parse_letter("(C) blue", options) == 2 and parse_letter("The answer is A.", options) == 0
    assert parse_letter("it is green", options) == 1 and parse_letter("D", options) is None and parse_letter("I think", options) is None
    assert parse_yes_no("Yes, there is.") == 0 and parse_yes_no("no") == 1 and parse_yes_no("maybe") is None
    assert open_answer_matches("The year 1850.", "1850") and open_answer_matches("1,850", "['1850', '1851']")
    assert open_answer_matches("the Gothic style", "gothic") and not open_answer_matches("1851", "1850")


@pytest.mark.parametrize("node, message", [
    ({"path": "{tsv}", "mode": "vote"}, "mode: unknown mode 'vote'"),
    ({"path": "{tsv}", "limit": 0}, "limit: expected an integer >= 1"),
    ({"path": "{tsv}", "reader": "mmbanch"}, "reader: unknown layout 'mmbanch'"),
    ({"path": "{tsv}", "colour": 1}, "colour: unknown key"),
    ({"path": None}, "path: missing"),
    ({"path": "/nonexistent/x.tsv"}, "does not exist"),
])
def test_spec_errors_are_one_line(tmp_path: Path, node: dict, message: str) -> None:
    tsv = bf.write_tsv(tmp_path / "x.tsv", [])
    node = {k: (v.format(tsv=tsv) if isinstance(v, str) else v) for k, v in node.items()}
    with pytest.raises((ConfigError, DataError), match=message) as err:
        BenchmarkSpec.from_config("mmbench", node)
    assert "\n" not in str(err.value)


def test_wrong_layout_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(DataError, match="no column 'index'"):
        list(BenchmarkSpec(name="mmbench", path=str(tmp_path / "x.tsv")).questions())
    with pytest.raises(DataError, match="no .parquet file"):
        list(BenchmarkSpec(name="mmmu", path=str(tmp_path)).questions())
