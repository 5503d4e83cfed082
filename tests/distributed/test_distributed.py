"""Two processes on CPU (gloo), forked with torchrun's worker environment by tests/forked.py, train the stage-2 demo
recipe through the real run path (`dsvl.cli.train.train`) with trainer=ddp and trainer=fsdp (FSDP2). Checked against the gathered records of both ranks:
every global step has one modality on all ranks, no sample is read by both ranks, and the loss of
every micro-batch equals a single-process run on the same global batches (the two ranks' micro-batches
accumulated), so the distributed gradient is the single-process gradient. Under FSDP2 the model is built on
meta and materialised per shard, and the frozen towers are sharded and hold neither gradients nor optimizer state."""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import IterableDataset

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import dist_worker  # noqa: E402
from dist_worker import compose_run  # noqa: E402

from ..forked import run_ranks  # noqa: E402

pytestmark = pytest.mark.slow
STEPS = 4


def torchrun(strategy: str, demo: Path, out: Path) -> dict[str, Any]:
    """dist_worker.py on 2 ranks, each a forked child with torchrun's worker environment (tests/forked.py)."""
    proc = run_ranks(dist_worker.main, ["dist_worker.py", "--strategy", strategy, "--data", str(demo), "--out", str(out),
                                        "--steps", str(STEPS)], 2)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return json.loads((out / "record.json").read_text())


class RankInterleave(IterableDataset):
    """Micro-batches of rank 0 and rank 1 in turn: one global step of a 2-rank run, accumulated in one process."""

    def __init__(self, datasets: list[IterableDataset]) -> None:
        self.datasets = datasets

    def __iter__(self) -> Iterator[dict[str, Any]]:
        its = [iter(d) for d in self.datasets]
        while True:
            for it in its:
                yield next(it)


@pytest.fixture(scope="module")
def reference(demo_dir, tmp_path_factory) -> list[dict[str, Any]]:
    """Single process, same seed and global batch (4 = 2 micro-batches of 2, accumulated)."""
    from dsvl.data.datamodule import DSVLDataModule
    from dsvl.data.grouped import GlobalStepBatches
    from dsvl.cli.train import train

    def two_rank_dataset(self: DSVLDataModule) -> RankInterleave:
        per_rank = dataclasses.replace(self.batching(), accumulate_grad_batches=1)
        return RankInterleave([GlobalStepBatches(self.train_sources, self.encoder, self.schedule, per_rank, rank=r,
                                                 world_size=2) for r in range(2)])

    out = tmp_path_factory.mktemp("single")
    mp = pytest.MonkeyPatch()
    mp.setattr(DSVLDataModule, "train_dataset", two_rank_dataset)
    try:
        train(compose_run("single", str(demo_dir), str(out), STEPS, devices=1, global_batch=4, micro=2))
    finally:
        mp.undo()
    record = json.loads((out / "record.json").read_text())
    assert record["world_size"] == 1 and len(record["ranks"][0]) == 2 * STEPS
    return record["ranks"][0]


def check_run(record: dict[str, Any], reference: list[dict[str, Any]], tol: float) -> None:
    ranks = record["ranks"]
    assert record["world_size"] == 2 and len(ranks) == 2
    assert [len(r) for r in ranks] == [STEPS, STEPS]
    # one modality per global step, the same on every rank; both modalities occur
    modalities = [[row["modality"] for row in r] for r in ranks]
    assert modalities[0] == modalities[1], modalities
    assert set(modalities[0]) == {"text", "multimodal"}
    # no sample is read by both ranks
    keys = [{k for row in r for k in row["keys"]} for r in ranks]
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    # the single-process run saw exactly these micro-batches (rank 0's, then rank 1's, per step) ...
    for step in range(STEPS):
        for rank in range(2):
            ref = reference[2 * step + rank]
            row = ranks[rank][step]
            assert ref["step"] == step and ref["keys"] == row["keys"] and ref["modality"] == row["modality"]
            # ... and, from the same weights at every step, the same loss
            assert row["loss"] == pytest.approx(ref["loss"], abs=tol), (step, rank, row["loss"], ref["loss"])
    # training moved the model: a loss trajectory, not one repeated value
    assert abs(ranks[0][-2]["loss"] - ranks[0][0]["loss"]) > 10 * tol


def test_ddp_matches_single_process(demo_dir, reference, tmp_path):
    record = torchrun("ddp", demo_dir, tmp_path)
    assert record["strategy"] == "DDPStrategy" and not record["checkpointing"]
    check_run(record, reference, tol=1e-5)


def test_fsdp2_matches_single_process_and_frozen_towers_hold_no_state(demo_dir, reference, tmp_path):
    from dsvl.stages.strategies import FSDP2Strategy, builds_on_meta

    # built on meta, then its part checkpoints (the demo's per-part `pretrained`) and the seeded init per shard
    assert builds_on_meta(FSDP2Strategy())
    record = torchrun("fsdp", demo_dir, tmp_path)
    assert record["strategy"] == "FSDP2Strategy" and record["checkpointing"]  # model.gradient_checkpointing
    check_run(record, reference, tol=1e-4)
    params = record["params"]
    frozen = {n: p for n, p in params.items() if n.startswith("vision.")}
    trained = {n: p for n, p in params.items() if n.startswith(("adaptor.", "llm."))}
    assert frozen and trained
    assert all(p["sharded"] for p in params.values()), [n for n, p in params.items() if not p["sharded"]][:5]
    for name, p in frozen.items():  # stage 2: both towers frozen
        assert not p["requires_grad"] and not p["grad"] and not p["in_optimizer"] and not p["optimizer_state"], name
    for name, p in trained.items():
        assert p["requires_grad"] and p["in_optimizer"] and p["optimizer_state"], name
    assert (tmp_path / "checkpoints" / "last.ckpt").is_dir()  # sharded (distributed) checkpoint
