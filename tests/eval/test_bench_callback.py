"""`val_benchmarks` during a 2-process DDP run (gloo; forked with torchrun's worker environment by tests/forked.py):
both ranks log the same val/bench/* numbers, each question counted once, and nothing hangs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from . import bench_files as bf
from ..forked import run_ranks

sys.path.insert(0, str(Path(__file__).parent))  # the worker's callbacks are named `bench_ddp_worker.<class>`
import bench_ddp_worker  # noqa: E402

pytestmark = pytest.mark.slow


def test_val_benchmarks_under_ddp(tmp_path: Path) -> None:
    from dsvl.data.demo import make_demo_data

    make_demo_data(tmp_path / "demo", seed=0, train_size=16, eval_size=8, shard_size=8)
    mmbench = bf.write_mmbench(tmp_path / "mmbench.tsv")
    text = bf.write_text(tmp_path / "pile.jsonl")
    hs = bf.write_hellaswag(tmp_path / "hs.jsonl")
    benchmarks = {"mmbench": {"path": str(tmp_path / "mmbench.tsv"), "batch_size": 2},
                  "hellaswag": {"path": str(tmp_path / "hs.jsonl"), "mode": "ppl_letter"},
                  "text_ppl": {"path": str(tmp_path / "pile.jsonl"), "max_length": 64}}
    out = tmp_path / "run"
    out.mkdir()
    proc = run_ranks(bench_ddp_worker.main, ["bench_ddp_worker.py", "--data", str(tmp_path / "demo"), "--out", str(out),
                                             "--benchmarks", json.dumps(benchmarks)], 2, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    metrics = ranks[0]["metrics"]
    assert ranks[1]["metrics"] == metrics
    assert metrics["val/bench/mmbench/num_samples"] == mmbench["questions"]
    assert metrics["val/bench/hellaswag/num_samples"] == hs["questions"]
    assert metrics["val/bench/text_ppl/num_samples"] == text["questions"] and metrics["val/bench/text_ppl/ppl"] > 1.0
    assert 0.0 <= metrics["val/bench/mmbench/accuracy"] <= 1.0
    report = ranks[0]["reports"]["mmbench"]
    assert report["num_rows"] == mmbench["rows"] and report["skipped"] == mmbench["skipped"]  # each row once over the ranks
    assert sum(c["num_samples"] for c in report["per_category"]["category"].values()) == mmbench["questions"]
