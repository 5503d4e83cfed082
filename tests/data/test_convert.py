"""`dsvl-data convert` for every format: counted skips per reason, image normalisation, the same
tokens as hand-written samples, deterministic output with any number of workers, one-line errors."""
from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from dsvl.cli.data import main
from dsvl.data import ImagePreprocessor, SampleEncoder, TextEncoder, iter_samples, read_tar
from dsvl.data.convert import convert
from dsvl.data.convert import inputs as convert_inputs

from .convert_inputs import ANSWER, QUESTION, write_inputs


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Every format converted once (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("convert")
    img = write_inputs(tmp)
    reports = {fmt: convert(fmt, [str(tmp / f"{fmt}.{ext}")], tmp / "out" / fmt, images=img["red.png"].parent,
                            shard_size=3, max_image_side=512, progress=False)
               for fmt, ext in (("llava", "json"), ("sharegpt", "json"), ("messages", "jsonl"), ("mmc4", "jsonl"),
                                ("text", "jsonl"))}
    return tmp, img, reports


def _samples(path):
    return {s.meta.get("id", s.key): s for s in iter_samples(sorted(str(p) for p in path.rglob("*.tar")))}


def test_every_format_converts_with_counted_skips(converted):
    tmp, _, r = converted
    counts = {fmt: (dict(rep.good), rep.skipped.as_dict()) for fmt, rep in r.items()}
    assert counts["llava"] == ({"multimodal": 4, "text": 1},
                               {"bad_conversation": 1, "bad_image": 2, "missing_field": 1, "placeholder_mismatch": 1})
    assert counts["sharegpt"] == ({"multimodal": 2}, {"bad_conversation": 1})
    assert counts["messages"] == ({"multimodal": 3, "text": 1}, {"bad_json": 3, "missing_field": 1})
    assert counts["mmc4"] == ({"multimodal": 1}, {"bad_json": 1}) and r["mmc4"].dropped_images == 1
    assert counts["text"] == ({"text": 1}, {"bad_json": 1, "missing_field": 1})
    for fmt, rep in r.items():  # nothing lost: every record is good or counted
        assert rep.records == sum(rep.good.values()) + rep.skipped.total
        assert main(["validate", str(tmp / "out" / fmt), "--quiet"]) == 0  # parent folder: text/ and multimodal/
    assert not (tmp / "out" / "sharegpt" / "text").exists()  # a folder only for modalities that occur

    llava = _samples(tmp / "out" / "llava")
    assert llava["l0"].conversation[0]["content"] == "<image_placeholder>" + QUESTION
    assert llava["l0"].category == "llava" and llava["l1"].modality == "text"
    assert [im.size for im in llava["l3"].images] == [(24, 40), (16, 16)]  # EXIF rotation applied, CMYK -> RGB
    assert llava["l3"].conversation[0]["content"] == "<image_placeholder> left, <image_placeholder> right?"
    assert llava["l4"].conversation[0] == {"role": "system", "content": "Be brief."}
    assert llava["l8"].images[0].getpixel((0, 0)) == (200, 30, 30)  # a GIF named .jpg is read for what it is
    share = list(_samples(tmp / "out" / "sharegpt").values())
    assert share[0].conversation[0]["role"] == "system" and share[0].images[0].getpixel((0, 0)) == (0, 0, 255)
    assert share[1].images[0].getpixel((0, 0))[0] == round(40000 / 257)  # 16-bit scaled, not clipped to white
    msgs = list(_samples(tmp / "out" / "messages").values())
    assert msgs[1].images[0].getpixel((0, 0)) == (255, 255, 255)  # transparent composited on white
    assert max(msgs[2].images[0].size) == 512  # 3000x2000 scan decoded at a reduced scale, downscaled
    assert msgs[3].conversation[0] == {"role": "system", "content": "Answer shortly."}
    doc = next(iter(_samples(tmp / "out" / "mmc4").values()))
    assert doc.text == "First sentence. <image_placeholder>Second one. Third." and doc.meta["url"] == "http://x"
    text = next(iter(_samples(tmp / "out" / "text").values()))
    assert text.text == "Plain words \u00e9\u00e8." and text.modality == "text"


def test_llava_and_messages_give_the_hand_written_tokens(converted, tokenizer, hybrid_spec):
    tmp, img, _ = converted
    enc = SampleEncoder(TextEncoder(tokenizer, 4, supervise="assistant", system_prompt=None),
                        ImagePreprocessor(hybrid_spec), 256)
    hand = {"__key__": "hand", "0.png": img["red.png"].read_bytes(),
            "json": json.dumps({"modality": "multimodal", "category": "llava", "conversation": [
                {"role": "user", "content": "<image_placeholder>" + QUESTION}, {"role": "assistant", "content": ANSWER}]})}
    want = enc(hand)
    got = [enc(next(read_tar(str(tmp / "out" / fmt / "multimodal" / "shard-000000.tar")))) for fmt in ("llava", "messages")]
    for g in got:
        assert g.input_ids == want.input_ids and g.labels == want.labels  # token by token
        for name in want.pixels:
            assert (g.pixels[name] == want.pixels[name]).all()


def test_same_output_bytes_with_any_number_of_workers(converted):
    tmp, img, _ = converted
    digests = []
    for i, workers in enumerate((1, 2)):
        out = tmp / f"det{i}"
        convert("llava", [str(tmp / "llava.json")], out, images=img["red.png"].parent, shard_size=2, workers=workers,
                max_image_side=512, progress=False)
        digests.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.rglob("*.tar"))})
    assert digests[0] == digests[1] and len(digests[0]) == 3


def test_json_list_streams_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(convert_inputs, "CHUNK", 16)  # records and numbers cut at every chunk boundary
    records = [{"text": f"record {i} " + "x" * (i * 7)} for i in range(40)] + [12345678901234567890]
    path = tmp_path / "list.json"
    path.write_text(" \n[" + ",\n ".join(json.dumps(r) for r in records) + "]")
    assert list(convert_inputs.read_records(path)) == records
    path.write_text(json.dumps(records[:3])[:-20])  # truncated: what came before is kept, the rest counted
    got = list(convert_inputs.read_records(path))
    assert got[:2] == records[:2] and isinstance(got[2], convert_inputs.Unreadable) and len(got) == 3
    path.write_text('[{"text": "a"}, {"x": ' + "[" * 100_000 + "]" * 100_000 + "}]")
    got = list(convert_inputs.read_records(path))
    assert got[0] == {"text": "a"} and isinstance(got[1], convert_inputs.Unreadable)


def test_hf_datasets_layouts_and_column_mapping(tmp_path):
    import datasets
    from datasets import Features, Image as HFImage, List, Value

    png = io.BytesIO()
    Image.new("RGB", (20, 10), (9, 9, 9)).save(png, "PNG")
    img = {"bytes": png.getvalue(), "path": None}
    turn = {"user": QUESTION, "assistant": ANSWER, "source": "ai2d"}
    datasets.Dataset.from_dict(
        {"images": [[img], [img, img]], "texts": [[turn], [turn, turn]]},
        features=Features({"images": List(HFImage()), "texts": List({k: Value("string") for k in turn})}),
    ).to_parquet(str(tmp_path / "cauldron.parquet"))
    conv = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]
    datasets.Dataset.from_dict({"id": ["a", "b"], "image": [img, None], "conversations": [conv, conv[:1] + [conv[1]]]},
                               features=Features({"id": Value("string"), "image": HFImage(),
                                                  "conversations": List({"from": Value("string"), "value": Value("string")})})
                               ).save_to_disk(str(tmp_path / "onevision"))
    datasets.Dataset.from_dict({"picture": [img, img], "sentence": [["a dog.", "a cat."], []]},
                               features=Features({"picture": HFImage(), "sentence": List(Value("string"))})
                               ).to_parquet(str(tmp_path / "flickr.parquet"))
    r = convert("hf", [str(tmp_path / "cauldron.parquet")], tmp_path / "c", progress=False)
    assert dict(r.good) == {"multimodal": 2}
    two = list(iter_samples(r.shards))[1]
    assert two.conversation[0]["content"] == "<image_placeholder><image_placeholder>" + QUESTION and len(two.images) == 2
    r = convert("hf", [str(tmp_path / "onevision")], tmp_path / "o", progress=False)
    assert dict(r.good) == {"multimodal": 1} and r.skipped.as_dict() == {"placeholder_mismatch": 1}  # <image>, no image
    r = convert("hf", [str(tmp_path / "flickr.parquet")], tmp_path / "f", columns={"image": "picture", "caption": "sentence"},
                progress=False)
    assert [s.text for s in iter_samples(r.shards)] == ["<image_placeholder>a dog."] and r.skipped.total == 1
    assert main(["convert", "--format", "hf", str(tmp_path / "flickr.parquet"), "--out", str(tmp_path / "x")]) == 2


def test_cli_user_mistakes_are_one_line_exit_2(tmp_path, capsys):
    good = tmp_path / "t.jsonl"
    good.write_text('{"text": "hi"}\n')
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    cases = [["convert", "--format", "nope", str(good), "--out", "o"],
             ["convert", "--format", "text", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")],
             ["convert", "--format", "text", str(good), "--out", str(tmp_path / "o"), "--workers", "0"],
             ["convert", "--format", "text", str(good), "--out", str(tmp_path / "o"), "--column", "text"],
             ["convert", "--format", "llava", str(good), "--out", str(tmp_path / "o2"), "--quiet"],  # nothing converts
             ["convert", "--format", "text", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "o3"), "--quiet"],
             ["validate", str(tmp_path / "nothing")], ["stats", "--bogus", "x"], ["frobnicate"],
             ["build", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "b")]]
    for argv in cases:
        assert _exit_code(argv) == 2, argv
        err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("WARNING")]  # logged skips
        assert len(err) == 1 and err[0].startswith("dsvl-data") and "error:" in err[0], (argv, err)
    assert main(["convert", "--format", "text", str(good), "--out", str(tmp_path / "ok"), "--quiet"]) == 0
    assert main(["stats", str(tmp_path / "ok"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["samples"] == {"text": 1}


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own usage errors
        return e.code


def test_a_demo_recipe_trains_on_converted_data(converted, demo_dir):
    from omegaconf import OmegaConf, open_dict

    from dsvl.cli._config import compose
    from dsvl.cli.train import train

    tmp, _, _ = converted
    out = tmp / "out"
    cfg = compose(["experiment=demo/sft", f"paths.data_dir={demo_dir}", "trainer.max_steps=2", "scheduler.warmup_steps=1",
                   "++trainer.enable_progress_bar=false", "data.micro_batch_size=2", "stage.global_batch=4",
                   "data.num_workers=0", "data.shuffle_buffer=4", "logger=csv", "callbacks.samples=null",
                   "val_every_n_steps=2", "data.val_max_batches=1", "mc_val.limit=4"], output_dir=tmp / "run")
    with open_dict(cfg):
        cfg.data.train_sources = OmegaConf.create({
            "llava": {"urls": str(out / "llava" / "multimodal"), "weight": 0.6, "modality": "multimodal"},
            "messages": {"urls": str(out / "messages" / "multimodal"), "weight": 0.4, "modality": "multimodal"},
            "chat_text": {"urls": [str(out / "llava" / "text"), str(out / "messages" / "text")], "modality": "text"}})
        cfg.data.val_sources = OmegaConf.create({"sharegpt": {"urls": str(out / "sharegpt" / "multimodal"),
                                                              "modality": "multimodal"}})
    train(cfg)
    import csv

    rows = list(csv.DictReader((tmp / "run" / "csv" / "metrics.csv").open()))
    assert (tmp / "run" / "checkpoints" / "last.ckpt").is_file() and any(r["train/loss"] for r in rows)
    assert any(r["val/mm_loss"] for r in rows)  # the converted sharegpt validation source was read
