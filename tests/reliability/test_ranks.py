"""Two ranks (torchrun, gloo, CPU) running `dsvl-train trainer=ddp`: skip counts are summed over ranks
(each rank reads its own shards) into skips.json, and a NaN on one rank only makes both ranks skip
the step, so the replicas stay identical."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from .conftest import HERE, bad_prefixed_shards, read_records, recorder
from ..forked import free_port

pytestmark = pytest.mark.slow


def _source(urls: list[str], modality: str) -> str:
    return "{urls:[" + ",".join(f"'{u}'" for u in urls) + f"],weight:1.0,modality:{modality}}}"


def test_two_ranks_sum_skips_and_agree_on_nan_steps(tmp_path, demo_data):
    urls, planted = bad_prefixed_shards(tmp_path / "shards")
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=demo/pretrain", f"paths.data_dir={demo_data}", f"hydra.run.dir={run_dir}", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.max_steps=4",
        "stage.global_batch=8", "data.micro_batch_size=2", "data.num_workers=0", "data.packing=false",
        "data.shuffle_buffer=0", "data.max_length=128", "data.schedule={start:0.5,target:0.5,warmup_steps:0,shape:linear}",
        "~data.train_sources", "+data.train_sources={text:" + _source(urls["text"], "text") + ",mm:"
        + _source(urls["multimodal"], "multimodal") + "}",
        "scheduler.warmup_steps=1", "validate_at_end=false", "callbacks.samples=null", "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false", *recorder(tmp_path / "rank{rank}.jsonl"),
        "+callbacks.poison._target_=reliability_hooks.PoisonLoss", "+callbacks.poison.steps=[1]", "+callbacks.poison.rank=1",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "--module", "dsvl.cli.train", *overrides]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="offline")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    report = json.loads((run_dir / "skips.json").read_text())
    assert report["by_reason"] == planted  # every shard's bad samples, read by one rank or the other

    ranks = [read_records(tmp_path / f"rank{r}.jsonl") for r in (0, 1)]
    weights = [{(x["step"], x["micro"]): x["weights"] for x in rec} for rec in ranks]
    assert weights[0] == weights[1]  # replicas identical at every micro-batch
    assert weights[0][(2, 0)] == weights[0][(1, 0)] != weights[0][(0, 0)]  # rank 1's NaN at step 1: no update anywhere
    assert not set(k for x in ranks[0] for k in x["keys"]) & set(k for x in ranks[1] for k in x["keys"])
