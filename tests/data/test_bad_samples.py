"""Every kind of bad sample is skipped and counted exactly, never fatal."""
from __future__ import annotations

import io
import json
import tarfile

from PIL import Image

from dsvl.data import SkipCounter, SkipReason, TextEncoder
from dsvl.data.build import validate_shards
from dsvl.data.encode import SampleEncoder
from dsvl.data.images import ImagePreprocessor
from dsvl.data.shards import write_shards
from dsvl.data.streams import Part, SourceReader


def _png(size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _mm(text: str, **images) -> dict:
    return {"json": json.dumps({"modality": "multimodal", "text": text}).encode(), **images}


GOOD_TEXT = {"json": {"modality": "text", "text": "a square has four corners."}}
GOOD_MM = _mm("<image_placeholder>a red square.", **{"0.png": _png()})
BAD = {
    SkipReason.BAD_IMAGE: [_mm("<image_placeholder>x", **{"0.png": b"not an image"}),
                           _mm("<image_placeholder>y", **{"0.png": _png((64, 64))[:60]})],  # truncated
    SkipReason.MISSING_FIELD: [{"txt": b"no json"}, {"json": {"modality": "text"}},
                               _mm("<image_placeholder>z", **{"1.png": _png()})],
    SkipReason.BAD_JSON: [{"json": b"{not json"}, {"json": b"[1, 2]"}],
    SkipReason.PLACEHOLDER_MISMATCH: [_mm("<image_placeholder><image_placeholder>two", **{"0.png": _png()}),
                                      _mm("none here", **{"0.png": _png()})],
    SkipReason.EMPTY_TEXT: [{"json": {"modality": "text", "text": "   "}}, _mm("<image_placeholder>", **{"0.png": _png()})],
    SkipReason.TOO_LONG: [{"json": {"modality": "text", "text": "four corners. " * 200}}],
    SkipReason.UNKNOWN_MODALITY: [{"json": {"modality": "audio", "text": "hi"}}],
    SkipReason.BAD_CONVERSATION: [{"json": {"modality": "text", "conversation": [{"role": "robot", "content": "x"}]}}],
}


def _write(tmp_path, samples, name):
    out = [dict(s, __key__=f"{name}{i:03d}") for i, s in enumerate(samples)]
    return write_shards(out, tmp_path / name, prefix=name, max_count=100)


def _reader(urls, encoder, counter):
    return SourceReader("src", [str(u) for u in urls], Part(), seed=0, encode=encoder, counter=counter,
                        shuffle=0, loop=False)


def _drain(reader):
    out = []
    while (got := reader.next_good()) is not None:
        out.append(got[0])
    return out


def _encoder(tokenizer, spec):
    text = TextEncoder(tokenizer, spec.num_image_tokens, system_prompt=None)
    return SampleEncoder(text, ImagePreprocessor(spec), max_length=300)


def test_each_kind_counted_exactly(tmp_path, tokenizer, hybrid_spec):
    samples, expected = [], {}
    for reason, bad in BAD.items():
        expected[reason.value] = len(bad)
        for s in bad:
            samples += [s, GOOD_TEXT, GOOD_MM]
    shard = _write(tmp_path, samples, "mix")[0]
    encoder = _encoder(tokenizer, hybrid_spec)
    counter = SkipCounter()
    good = _drain(_reader([shard], encoder, counter))
    n_good = 2 * sum(len(b) for b in BAD.values())
    assert len(good) == n_good
    assert counter.as_dict() == dict(sorted(expected.items()))
    assert all(not g.key.endswith(tuple(f"{3 * i:03d}" for i in range(len(samples) // 3))) for g in good)

    # the validator: the same exact counts with the encoder; without it, over-long text passes
    report = validate_shards([str(shard)], progress=False, encoder=encoder)
    assert report.skipped.as_dict() == dict(sorted(expected.items())) and report.good == n_good
    report = validate_shards([str(shard)], progress=False)
    assert report.skipped.as_dict() == {k: v for k, v in sorted(expected.items()) if k != "too_long"}
    assert report.good == n_good + 1


def test_truncated_and_unreadable_shards(tmp_path, tokenizer, hybrid_spec):
    shard = _write(tmp_path, [GOOD_TEXT, GOOD_MM] * 10, "good")[0]
    data = shard.read_bytes()
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    m = next(m for m in members[len(members) // 2:] if m.name.endswith(".png"))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: m.offset_data + 10])  # ends inside an image
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"\x00garbage" * 10)
    counter = SkipCounter()
    good = _drain(_reader([cut, garbage, tmp_path / "missing.tar", shard], _encoder(tokenizer, hybrid_spec), counter))
    assert 20 < len(good) < 40  # the intact shard plus the readable part of the cut one
    assert counter.as_dict() == {"bad_shard": 3}


def test_counter_merges_and_summarises():
    a, b = SkipCounter(), SkipCounter({"bad_json": 2})
    a.add(SkipReason.BAD_IMAGE, "k1")
    a.add(SkipReason.BAD_JSON, "k2")
    a += b
    assert a.as_dict() == {"bad_image": 1, "bad_json": 3}
    assert SkipCounter.merged([a, {"too_long": 1}]).total == 5
    assert "bad_json=3" in a.summary()
    assert a.all_reduce().as_dict() == a.as_dict()  # no process group: unchanged
