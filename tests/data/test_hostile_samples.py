"""img2dataset tars as `format: caption` sources (exact resume through the DataModule), and a fuzz
test: random and adversarial members never stop the training stream or the validator, and
every sample is either good or counted."""
from __future__ import annotations

import io
import json
import random
import tarfile

import webdataset as wds
from PIL import Image

from dsvl.data import DSVLDataModule, SampleEncoder, SkipCounter, TextEncoder
from dsvl.data.build import validate_shards
from dsvl.data.images import ImagePreprocessor
from dsvl.data.streams import Part, SourceReader

from .convert_inputs import encoded, png_header


def _img2dataset_tar(path, n, start=0):
    """An img2dataset shard: KEY.jpg + KEY.txt + KEY.json, 9-digit keys; a few broken samples."""
    with wds.TarWriter(str(path), encoder=False) as w:
        for i in range(start, start + n):
            key = f"{i:09d}"
            img = encoded(Image.new("RGB", (24 + i % 5, 20), (i * 9 % 255, 60, 90)), "JPEG")
            meta = {"url": f"http://x/{i}.jpg", "caption": f"picture number {i}.", "key": key, "status": "success",
                    "width": 24, "height": 20, "exif": "{}"}
            sample = {"__key__": key, "jpg": img, "json": json.dumps(meta).encode()}
            if i % 7 == 3:
                sample["jpg"] = img[:40]  # truncated download
            if i % 11 != 5:  # caption only in the metadata for these
                sample["txt"] = meta["caption"].encode()
            w.write(sample)


def _caption_dm(root, tokenizer_dir, spec):
    return DSVLDataModule(str(tokenizer_dir), {"cap": {"urls": str(root), "modality": "multimodal", "format": "caption"}},
                          vision_spec=spec, micro_batch_size=2, max_length=64, mode="multimodal_only",
                          system_prompt=None, shuffle_buffer=5, seed=3)


def test_caption_tar_source_streams_and_resumes_exactly(tmp_path, demo_dir, hybrid_spec):
    for s in range(3):
        _img2dataset_tar(tmp_path / f"{s:05d}.tar", 9, start=s * 9)
    dm = _caption_dm(tmp_path, demo_dir / "tokenizer", hybrid_spec)
    it = iter(dm.train_dataloader())
    first = [dm.record(next(it)) for _ in range(7)]
    assert first[0]["modality"] == "multimodal" and first[0]["pixel_values"].shape[0] == 2
    state = dm.state_dict()
    expected = [dm.record(next(it))["keys"] for _ in range(8)]  # crosses the epoch end (27 samples, 4 bad)
    dm2 = _caption_dm(tmp_path, demo_dir / "tokenizer", hybrid_spec)
    dm2.load_state_dict(state)
    it2 = iter(dm2.train_dataloader())
    assert [dm2.record(next(it2))["keys"] for _ in range(8)] == expected
    skips = dm.skip_counts().as_dict()
    assert set(skips) == {"bad_image"} and skips["bad_image"] >= 4  # the whole first epoch was read
    assert dm2.skip_counts().as_dict() == skips  # the counts resume with the positions
    report = validate_shards(str(tmp_path), progress=False, fmt="caption")
    assert report.good == 23 and report.skipped.as_dict() == {"bad_image": 4}


def _adversarial():
    """(key, members) of samples built to break parsers; a few good ones among them."""
    good_png = encoded(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    jpg = encoded(Image.new("RGB", (30, 30), (1, 2, 3)), "JPEG")
    mm = lambda text: json.dumps({"modality": "multimodal", "text": "<image_placeholder>" + text})  # noqa: E731
    txt = lambda **kw: json.dumps({"modality": "text", "text": "fine.", **kw})  # noqa: E731
    deep = '{"modality": "text", "text": "deep", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    return [
        ("good_text", {"json": txt()}),
        ("good_image", {"json": mm("a box."), "0.png": good_png}),
        ("one_pixel", {"json": mm("a dot."), "0.png": encoded(Image.new("RGB", (1, 1)), "PNG")}),
        ("deep_json", {"json": deep}),
        ("deep_conv", {"json": '{"modality": "text", "conversation": ' + "[" * 200_000 + "]" * 200_000 + "}"}),
        ("huge_text", {"json": txt(text="word " * 1_000_000)}),
        ("text_list", {"json": txt(text=["a", "b"])}),
        ("category_list", {"json": txt(category=["a"])}),
        ("conv_str", {"json": json.dumps({"modality": "text", "conversation": "hello"})}),
        ("content_int", {"json": json.dumps({"modality": "text", "conversation": [{"role": "user", "content": 5}]})}),
        ("modality_int", {"json": txt(modality=5)}),
        ("json_list", {"json": "[]"}), ("json_null", {"json": "null"}), ("json_empty", {"json": ""}),
        ("nul_bytes", {"json": b'{"modality": "text", "text": "a\x00b"}'}),
        ("nul_escaped", {"json": txt(text="a\u0000b")}),
        ("surrogate", {"json": '{"modality": "text", "text": "\\ud800 lone"}'}),
        ("not_utf8", {"json": b'{"modality": "text", "text": "\xff\xfe"}'}),
        ("trunc_png", {"json": mm("x"), "0.png": good_png[:30]}),
        ("trunc_jpg", {"json": mm("x"), "0.jpg": jpg[:200]}),
        ("jpg_header_only", {"json": mm("x"), "0.jpg": b"\xff\xd8\xff\xe0"}),
        ("zero_byte_img", {"json": mm("x"), "0.png": b""}),
        ("zero_pixels", {"json": mm("x"), "0.png": png_header(0, 5)}),
        ("bomb", {"json": mm("x"), "0.png": png_header(30000, 30000)}),
        ("no_json", {"0.png": good_png}),
        ("zero_byte_json", {"json": b""}),
    ]


def _fuzz_shard(path, seed=0, n_random=150):
    rng = random.Random(seed)
    samples = _adversarial()
    base = [s for s in samples if s[0] in ("good_text", "good_image")]
    for i in range(n_random):  # mutations of good samples: flipped, cut and inserted bytes
        name, members = rng.choice(base)
        members = dict(members)
        field = rng.choice(sorted(members))
        data = bytearray(members[field].encode() if isinstance(members[field], str) else members[field])
        for _ in range(rng.randint(1, 4)):
            op, at = rng.randrange(3), rng.randrange(max(len(data), 1))
            if op == 0 and data:
                data[at] = rng.randrange(256)
            elif op == 1:
                del data[at:at + rng.randint(1, 20)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        members[field] = bytes(data)
        samples.append((f"rand{i:04d}", members))
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for field, data in members.items():
                data = data.encode() if isinstance(data, str) else data
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return len(samples)


class _Longest:
    """A tokenizer proxy that remembers the longest text it was asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, text, **kw):
        self.longest = max(self.longest, len(text))
        return self.tokenizer(text, **kw)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_fuzz_stream_and_validator_go_on_and_count_everything(tmp_path, tokenizer, hybrid_spec):
    total = _fuzz_shard(tmp_path / "fuzz.tar")
    spy = _Longest(tokenizer)
    text = TextEncoder(spy, 4, system_prompt=None)
    encoder = SampleEncoder(text, ImagePreprocessor(hybrid_spec), max_length=128)
    counter = SkipCounter()
    reader = SourceReader("fuzz", [str(tmp_path / "fuzz.tar")], Part(), 0, encoder, counter, shuffle=0, loop=False)
    good = 0
    while reader.next_good() is not None:
        good += 1
    assert good >= 3 and good + counter.total == total
    counts = counter.as_dict()
    assert counts["bad_json"] >= 10 and counts["bad_image"] >= 6 and counts["too_long"] == 1
    assert spy.longest < 100_000  # the 5M-character text was rejected before tokenization
    for enc in (encoder, None):
        report = validate_shards(str(tmp_path / "fuzz.tar"), progress=False, encoder=enc)
        assert report.good + report.skipped.total == total
    # the training stream: mixed with good sources, it keeps making batches
    dm = DSVLDataModule(tokenizer, {"fuzz": {"urls": str(tmp_path / "fuzz.tar"), "modality": "multimodal"},
                                    "fuzz_text": {"urls": str(tmp_path / "fuzz.tar"), "modality": "text"}},
                        vision_spec=hybrid_spec, micro_batch_size=2, max_length=128, system_prompt=None,
                        shuffle_buffer=4, schedule=dict(start=0.5, target=0.5, warmup_steps=0))
    it = iter(dm.train_dataloader())
    batches = [dm.record(next(it)) for _ in range(12)]
    assert {b["modality"] for b in batches} == {"text", "multimodal"}
