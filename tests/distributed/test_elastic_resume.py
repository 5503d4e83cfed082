"""Elastic resume (issue 14): a checkpoint of a 2-process run resumes on 1 process, and a checkpoint of
that 1-process run resumes on 2 processes, with the same global batch (4 = 2 ranks x 2 or 1 rank x 2
accumulated x 2). The data is split into 2 logical parts at the first launch, kept by the checkpoints,
and every global micro-batch is built by the same part from the same position whatever the layout: the
sample keys of every micro-batch, the modality of every step and the losses equal the uninterrupted
2-process run's, so no sample is repeated or skipped.

Chain (trainer=fsdp: FSDP2 on gloo, sharded `torch.distributed.checkpoint` checkpoints, so the model and
optimizer state re-shard through DCP between 2 ranks and 1; the demo model; `dsvl-train` through torchrun):
  reference: 2 processes, steps 0-5, a checkpoint after every step
  shrunk:    1 process from the reference's checkpoint after step 3 (data.parts stays 2), steps 3-5
  grown:     2 processes from the shrunk run's checkpoint after step 4, steps 4-5
The uninterrupted run's checkpoint after step 3 is the one a run stopped there would have written
(the data position is that of the consumed batches).

The reference's last checkpoint then starts a next stage (`init_from=<sharded .ckpt directory>`): on 2 processes
under FSDP2 each rank's shards, and in one process without FSDP the whole model, hold exactly the weights
tools/consolidate_checkpoint.py writes from that directory (its optimizer state is not read)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
HOOKS = HERE.parent / "reliability"  # reliability_hooks.StepRecorder: one JSON line per micro-batch, per rank
sys.path[:0] = [str(HERE), str(HOOKS)]
from dist_worker import overrides  # noqa: E402

from ..forked import run_ranks  # noqa: E402

pytestmark = pytest.mark.slow
STEPS, GLOBAL_BATCH, MICRO = 6, 4, 2
# the demo model from a seeded random init (no pretrained parts to make)
NO_PARTS = ("model.llm.pretrained=null", "model.vision.low.pretrained=null", "model.vision.high.pretrained=null")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from dsvl.data.demo import make_demo_data

    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, seed=0, train_size=120, eval_size=8, shard_size=20, parts=False)
    return out


def _args(demo: Path, out: Path, devices: int, *extra: str) -> list[str]:
    return [*overrides("fsdp", str(demo), STEPS, devices, GLOBAL_BATCH, MICRO), "data.num_workers=0",
            *NO_PARTS,
            "+callbacks.model_checkpoint._target_=dsvl.callbacks.RunCheckpoint",
            f"+callbacks.model_checkpoint.dirpath={out}/checkpoints", "callbacks.model_checkpoint.every_n_train_steps=1",
            "+callbacks.model_checkpoint.save_top_k=-1",
            "+callbacks.record._target_=reliability_hooks.StepRecorder", f"+callbacks.record.path='{out}/rank{{rank}}.jsonl'",
            *extra]


def _torchrun(args: list[str], out: Path, processes: int = 2) -> None:
    """`dsvl-train` on `processes` ranks, each a forked child with torchrun's worker environment (tests/forked.py;
    one process too: an in-process FSDP2 run would leave this pytest process a default process group and the
    MASTER_* / RANK variables, which later tests and their subprocesses inherit)."""
    from dsvl.cli.train import main

    proc = run_ranks(main, ["dsvl-train", f"hydra.run.dir={out}", *args], processes)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


def _global_order(out: Path, ranks: int) -> list[dict[str, Any]]:
    """The run's micro-batches in global order: per step, micro-batch i of rank r is number i * ranks + r."""
    rows = [[json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in range(ranks)]
    assert len({len(r) for r in rows}) == 1
    accumulate = GLOBAL_BATCH // (MICRO * ranks)  # the recorded loss is divided by the accumulation
    return [dict(rows[r][n], rank=r, loss=rows[r][n]["loss"] * accumulate) for n in range(len(rows[0])) for r in range(ranks)]


def _checkpoint(out: Path, step: int) -> Path:
    (path,) = (out / "checkpoints").glob(f"*step={step + 1}.ckpt")  # Lightning counts the steps done
    return path


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [(r["step"], r["modality"]) for r in got] == [(r["step"], r["modality"]) for r in want]
    for g, w in zip(got, want):
        assert g["keys"] == w["keys"], (g["step"], g["rank"], w["rank"])
        assert g["loss"] == pytest.approx(w["loss"], abs=1e-4), (g["step"], g["loss"], w["loss"])


@pytest.fixture(scope="module")
def ref_dir(demo, tmp_path_factory) -> Path:
    """The uninterrupted 2-process run."""
    out = tmp_path_factory.mktemp("ref")
    _torchrun(_args(demo, out, 2), out)
    return out


def test_resume_on_one_process_then_on_two_continues_the_two_process_run(demo, ref_dir, tmp_path):
    shrunk_dir, grown_dir = tmp_path / "shrunk", tmp_path / "grown"
    ref = _global_order(ref_dir, 2)
    assert [r["step"] for r in ref] == [s for s in range(STEPS) for _ in range(2)]
    assert {r["modality"] for r in ref} == {"text", "multimodal"}
    keys = [k for r in ref for k in r["keys"]]
    assert len(keys) == len(set(keys))  # 6 steps x 4 samples, each once (one epoch of each part)

    _torchrun(_args(demo, shrunk_dir, 1, f"ckpt_path='{_checkpoint(ref_dir, 2)}'"), shrunk_dir, processes=1)
    shrunk = _global_order(shrunk_dir, 1)
    _same(shrunk, ref[3 * 2:])  # steps 3-5 on one process: 2 micro-batches accumulated per step

    _torchrun(_args(demo, grown_dir, 2, f"ckpt_path='{_checkpoint(shrunk_dir, 3)}'"), grown_dir)
    _same(_global_order(grown_dir, 2), ref[4 * 2:])  # steps 4-5 on two processes again



def test_next_stage_starts_from_the_sharded_checkpoint_on_two_ranks_and_on_one(demo, ref_dir, tmp_path):
    import importlib.util

    import torch
    from omegaconf import OmegaConf

    from dsvl.cli.models import build_model
    from dsvl.model import VisionLanguageModel
    from dsvl.stages.checkpoint import load_init_weights

    ckpt = _checkpoint(ref_dir, STEPS - 1)
    spec = importlib.util.spec_from_file_location("consolidate", HERE.parents[1] / "tools" / "consolidate_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    consolidated = VisionLanguageModel.from_pretrained(tool.consolidate(ckpt, tmp_path / "export")).state_dict()

    out = tmp_path / "next"
    _torchrun([*overrides("fsdp", str(demo), 1, 2, GLOBAL_BATCH, MICRO), "data.num_workers=0", *NO_PARTS, f"init_from='{ckpt}'", "~callbacks.model_checkpoint",
               "+callbacks.weights._target_=dist_recorder.WeightDump", f"+callbacks.weights.path='{out}/weights{{rank}}.pt'"], out)
    for rank in range(2):
        parts = torch.load(out / f"weights{rank}.pt")
        assert set(parts) == set(consolidated)
        sharded = 0
        for name, (offset, local) in parts.items():
            whole = consolidated[name]
            sharded += local.shape != whole.shape
            index = tuple(slice(o, o + n) for o, n in zip(offset, local.shape))
            assert torch.equal(local, whole[index]), (rank, name)
        assert sharded > len(parts) // 2  # each rank read its slices, not the whole model

    cfg = OmegaConf.load(ref_dir / "config_resolved.yaml")
    torch.manual_seed(1)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True))
    load_init_weights(model, ckpt)  # one process, no FSDP (DDP, single device): the whole model
    for name, value in consolidated.items():
        assert torch.equal(model.state_dict()[name], value), name
