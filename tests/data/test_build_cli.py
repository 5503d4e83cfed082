"""Shard builder and validator on a small JSONL + images input; the dsvl-data CLI."""
from __future__ import annotations

import json

from PIL import Image

from dsvl.cli.data import main
from dsvl.data import parse_sample, read_tar
from dsvl.data.build import build_shards


def _input(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(img_dir / "a.png")
    Image.new("RGB", (20, 50), (10, 10, 200)).save(img_dir / "b.jpg")
    (img_dir / "broken.jpg").write_bytes(b"nope")
    lines = [
        {"key": "one", "modality": "multimodal", "category": "caption", "text": "<image_placeholder>a green box.",
         "images": ["a.png"]},
        {"modality": "multimodal", "category": "interleaved",
         "text": "<image_placeholder>green <image_placeholder>blue", "images": ["a.png", "b.jpg"]},
        {"modality": "text", "text": "just words."},
        {"modality": "multimodal", "conversation": [{"role": "user", "content": "<image_placeholder>Color?"},
                                                    {"role": "assistant", "content": "blue"}], "images": ["b.jpg"]},
        {"modality": "multimodal", "text": "<image_placeholder>missing", "images": ["nothere.png"]},
        {"modality": "multimodal", "text": "<image_placeholder>broken", "images": ["broken.jpg"]},
        {"modality": "multimodal", "text": "no placeholder", "images": ["a.png"]},
    ]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n{bad json\n" + "[" * 100_000 + "\n")
    return jsonl, img_dir


def test_build_then_validate(tmp_path):
    jsonl, img_dir = _input(tmp_path)
    report = build_shards(jsonl, img_dir, tmp_path / "out", shard_size=3, progress=False)
    assert report.good == 4 and len(report.shards) == 2
    assert report.skipped.as_dict() == {"bad_image": 1, "bad_json": 2, "missing_field": 1, "placeholder_mismatch": 1}
    samples = [parse_sample(s) for p in report.shards for s in read_tar(p)]
    assert [s.key for s in samples][0] == "one"
    inter = samples[1]
    assert [im.size for im in inter.images] == [(40, 30), (20, 50)]
    assert samples[3].conversation[1]["content"] == "blue"
    assert "images" not in samples[0].meta  # image paths become fields 0.png, 1.jpg...


def test_cli_build_validate_demo(tmp_path, capsys):
    jsonl, img_dir = _input(tmp_path)
    assert main(["build", str(jsonl), "--images", str(img_dir), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert main(["validate", str(tmp_path / "s"), "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert out["good"] == 4 and out["skipped"] == {}
    (tmp_path / "s" / "bad.tar").write_bytes(b"garbage")
    assert main(["validate", str(tmp_path / "s"), "--quiet"]) == 2
    assert main(["validate", str(tmp_path / "nothing" / "*.tar"), "--quiet"]) == 2  # one line, exit 2
    assert main(["demo", "--out", str(tmp_path / "demo"), "--train-size", "20", "--eval-size", "8"]) == 0
    assert (tmp_path / "demo" / "tokenizer" / "tokenizer.json").exists()


def test_stats_measure_token_lengths_and_packing_fill(demo_dir, tokenizer):
    from dsvl.data import SampleEncoder, TextEncoder
    from dsvl.data.stats import shard_stats

    enc = SampleEncoder(TextEncoder(tokenizer, 4), None, 48)
    r = shard_stats([str(demo_dir / "pretrain" / s / "val") for s in ("text", "caption")], enc, 48, progress=False)
    assert r["samples"] == {"text": r["images_per_sample"]["text"][0], "multimodal": r["images_per_sample"]["multimodal"][1]}
    text = r["tokens"]["text"]
    assert text["p50"] <= text["p100"] and 0 < text["over_max_length"] < 1 and 0.5 < text["packing_fill"] <= 1
