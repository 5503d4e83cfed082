"""Corrupt data never kills a run: stage 2 over shards where ~10% of the samples are bad (every
kind of the data format's bad samples, a truncated last tar, an unreadable shard path) completes,
and the skip counts per reason (run log, logger, <run dir>/skips.json) equal what was planted.

The run consumes every good sample exactly once (shuffle buffer off, one sample per row, grouped
steps alternating text / multimodal), so every planted sample is read exactly once.
"""
from __future__ import annotations

import csv
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from .conftest import mm_sample as _mm
from .conftest import png_bytes as _png
from .conftest import run_train_forked
from .conftest import text_sample as _text
from .conftest import write_shard as _write

from dsvl.data import SkipCounter
from dsvl.data.schedule import ModalitySchedule
from dsvl.data.streams import Part, SourceReader

MAX_STEPS, SAMPLES_PER_STEP = 22, 4  # global_batch 4 = 2 micro-batches of 2
SCHEDULE = {"start": 0.5, "target": 0.5, "warmup_steps": 0, "shape": "linear"}


BAD_TEXT = {
    "bad_json": {"json": b"{\"modality\": \"text\", \"text\": "},
    "missing_field": {"json": {"modality": "text", "category": "fact"}},
    "empty_text": {"json": {"modality": "text", "text": "   "}},
    "too_long": {"json": {"modality": "text", "text": "four corners and " * 200}},
    "unknown_modality": {"json": {"modality": "audio", "text": "a sound"}},
}
BAD_MM = {
    "bad_image": {"json": {"modality": "multimodal", "text": "<image_placeholder>x"}, "0.png": b"\x89PNG not really"},
    "bad_image#truncated": {"json": {"modality": "multimodal", "text": "<image_placeholder>y"}, "0.png": _png(64)[:80]},
    "placeholder_mismatch": {"json": {"modality": "multimodal", "text": "<image_placeholder><image_placeholder>two"},
                             "0.png": _png()},
    "missing_field": {"json": {"modality": "multimodal", "text": "<image_placeholder>z"}, "1.png": _png()},
    "empty_text": {"json": {"modality": "multimodal", "text": "<image_placeholder>"}, "0.png": _png()},
    "unknown_modality": _text(999),  # a text sample in a multimodal source
}


def _interleave(good: list[dict], bad: list[dict], shards: int) -> list[list[dict]]:
    """Split into `shards` lists, bad samples spread between good ones, every shard ending with a good one."""
    per = -(-len(bad) // shards)
    out, g = [], 0
    n_good = len(good) // shards
    for s in range(shards):
        mine_bad = bad[s * per:(s + 1) * per]
        mine_good = good[g:g + n_good] if s < shards - 1 else good[g:]
        g += n_good
        rows: list[dict] = []
        step = max(1, len(mine_good) // (len(mine_bad) + 1))
        for i, sample in enumerate(mine_good):
            rows.append(sample)
            if mine_bad and (i + 1) % step == 0 and i < len(mine_good) - 1:
                rows.append(mine_bad.pop(0))
        rows[-1:-1] = mine_bad  # any left: before the last good sample
        out.append(rows)
    return out


def _truncate(path: Path) -> Path:
    """Cut the tar inside the image of its last sample (a writer that died mid-file)."""
    with tarfile.open(path) as tar:
        last_png = [m for m in tar.getmembers() if m.name.endswith(".png")][-1]
    cut = path.with_name(path.stem + "-truncated.tar")
    cut.write_bytes(path.read_bytes()[: last_png.offset_data + 20])
    path.unlink()
    return cut


def _no_trailing_damage(name: str, urls: list[str], seed: int) -> bool:
    """With this seed, does the source's read order end on a readable sample (so the damaged and missing
    shards are counted before the run has consumed the last good sample)? Uses the real reader."""
    counter = SkipCounter()
    reader = SourceReader(name, urls, Part(), seed, encode=lambda raw: raw, counter=counter, shuffle=0, loop=False)
    at_last = 0
    while reader.next_good() is not None:
        at_last = counter.total
    return counter.total == at_last


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory, demo_data):
    root = tmp_path_factory.mktemp("corrupt")
    modalities = [ModalitySchedule(**SCHEDULE).modality(s) for s in range(MAX_STEPS)]
    n_text, n_mm = (modalities.count(m) * SAMPLES_PER_STEP for m in ("text", "multimodal"))
    text_shards = _interleave([_text(i) for i in range(n_text)], list(BAD_TEXT.values()), 2)
    text_urls = [str(_write(rows, root / "text", f"text{s}")) for s, rows in enumerate(text_shards)]
    unreadable = root / "text" / "text9-unreadable.tar"  # exists, but no tar reader can read it
    unreadable.write_bytes(b"\x00\xffnot a tar archive" * 64)
    text_urls.append(str(unreadable))
    # multimodal: two mixed shards plus a last shard truncated inside its final sample (which is lost)
    mm_good = [_mm(i) for i in range(n_mm)]
    tail = mm_good[-5:]
    mm_shards = _interleave(mm_good[:-5], list(BAD_MM.values()), 2)
    mm_urls = [str(_write(rows, root / "mm", f"mm{s}")) for s, rows in enumerate(mm_shards)]
    mm_urls.append(str(_truncate(_write(tail + [_mm(10_000)], root / "mm", "mm9"))))
    seed = next(s for s in range(200) if _no_trailing_damage("text", text_urls, s) and _no_trailing_damage("mm", mm_urls, s))
    planted = Counter(k.split("#")[0] for k in [*BAD_TEXT, *BAD_MM]) + Counter({"bad_shard": 2})
    total = n_text + n_mm + 1 + len(BAD_TEXT) + len(BAD_MM)  # +1: the sample lost in the truncated tar
    assert 0.09 <= (len(BAD_TEXT) + len(BAD_MM)) / total <= 0.15

    def src(urls: list[str], modality: str) -> str:
        return "{urls:[" + ",".join(f"'{u}'" for u in urls) + f"],weight:1.0,modality:{modality}}}"

    run_dir = root / "run"
    proc = run_train_forked([
        "experiment=demo/pretrain", f"paths.data_dir={demo_data}", f"hydra.run.dir={run_dir}", f"seed={seed}",
        f"trainer.max_steps={MAX_STEPS}", "stage.global_batch=4", "data.micro_batch_size=2", "data.num_workers=0",
        "data.max_length=128", "data.packing=false", "data.shuffle_buffer=0",
        "data.schedule={" + ",".join(f"{k}:{v}" for k, v in SCHEDULE.items()) + "}",
        "~data.train_sources", "+data.train_sources={text:" + src(text_urls, "text") + ",mm:" + src(mm_urls, "multimodal") + "}",
        "scheduler.warmup_steps=1", "validate_at_end=false", "callbacks.samples=null", "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false",
    ], timeout=300)
    return proc, dict(planted), run_dir


def test_run_completes(corrupt):
    proc, _, run_dir = corrupt
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_skips_json_equals_planted(corrupt):
    _, planted, run_dir = corrupt
    report = json.loads((run_dir / "skips.json").read_text())
    assert report["by_reason"] == dict(sorted(planted.items()))
    assert report["total"] == sum(planted.values()) and report["global_step"] == MAX_STEPS


def test_skips_in_logs_and_logger(corrupt):
    proc, planted, run_dir = corrupt
    out = proc.stdout + proc.stderr
    summary = "skipped {} samples: {}".format(sum(planted.values()), ", ".join(f"{k}={v}" for k, v in sorted(planted.items())))
    assert summary in out
    for reason in planted:
        assert f": {reason}" in out  # each kind logged with its sample key when skipped
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    logged = {k.split("/")[-1]: float(v) for r in rows for k, v in r.items() if k.startswith("data/skipped/") and v}
    assert logged == {k: float(v) for k, v in planted.items()}
