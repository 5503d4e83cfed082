"""Meta-device build under FSDP2 (issue 14, item 1), two processes on CPU (gloo) in one torchrun launch: every
local shard of a model built on meta, sharded and materialised per shard equals the corresponding slice of the
same model built whole in one process with the same seed (untied and tied embeddings; parameters and every
buffer, non-persistent ones included), the sharded model gives the whole model's loss, and loading a saved
checkpoint (transformers export, Lightning `.ckpt`, `model.pretrained`) into shards gives the saved weights. With
per-part `pretrained` (as the demo recipes) the sharded model equals the one built whole, modules outside the part
checkpoints included (they once differed: a 2-rank FSDP2 run left the 1-process run at its first multimodal step).
A sharded (DCP) checkpoint written by the two ranks consolidates in one process into a `save_pretrained` export
holding the whole model's weights; `init_from` that checkpoint gives each rank of a 2-rank FSDP2 build the slices of
those weights (also from one written by 1 process), and a model built whole in one process all of them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..forked import free_port

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("meta")


@pytest.fixture(scope="module")
def reports(out) -> list[dict]:
    return run_two_ranks(HERE / "meta_worker.py", out)


def run_two_ranks(worker: Path, out: Path) -> list[dict]:
    """`worker --out <out>` under torchrun on 2 CPU processes; the `<out>/rank<r>.json` reports it wrote."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(worker), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("tie", [False, True])
def test_random_init_into_shards_equals_the_whole_model_with_the_same_seed(reports, tie):
    for report in reports:
        init = report[f"init_tie{tie}"]
        assert init["mismatches"] == [] and init["sharded"] > 0.8 * init["tensors"]
        assert init["tied"] is tie
        sharded_loss, whole_loss = report[f"loss_tie{tie}"]
        assert sharded_loss == pytest.approx(whole_loss, abs=1e-5)


@pytest.mark.parametrize("source", ["dcp", "dcp1", "export", "ckpt", "model.pretrained", "parts"])
def test_checkpoints_load_into_shards_slice_by_slice(reports, source):
    for report in reports:
        assert report[f"load_{source}"]["mismatches"] == []


def test_sharded_checkpoint_consolidates_in_one_process(reports, out, tmp_path):
    import importlib.util

    import torch

    from dsvl.model import VisionLanguageModel

    spec = importlib.util.spec_from_file_location("consolidate", HERE.parents[1] / "tools" / "consolidate_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(out / "run" / "dcp"), str(tmp_path / "export")]) == 0  # config found above the checkpoint
    reference = torch.load(out / "run" / "reference.pt")
    loaded = VisionLanguageModel.from_pretrained(tmp_path / "export").state_dict()
    assert set(loaded) == set(reference)
    for name, value in reference.items():
        assert torch.equal(loaded[name], value), name
    assert tool.main([str(tmp_path / "export"), str(tmp_path / "again")]) == 2  # not a DCP directory: one line, exit 2

    # init_from of the sharded checkpoint in one process without FSDP (DDP, 1 device): the consolidated weights
    from dsvl.cli.models import build_model
    from dsvl.cli.presets import model_config
    from dsvl.stages.checkpoint import load_init_weights

    torch.manual_seed(5)
    fresh = build_model(model_config("tiny", ["model.llm.tie_word_embeddings=false"]))
    load_init_weights(fresh, out / "run" / "dcp")
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, loaded[name]), name


def test_lora_keeps_the_whole_build():
    """A `model.lora` config asked for on meta is built whole, as on the eager path: peft initialises its adapters
    (lora_B zero) on real tensors, so FSDP2 shards it as built (no per-shard materialisation)."""
    import torch

    from dsvl.cli.models import build_model
    from dsvl.cli.presets import model_config
    from dsvl.model.materialize import has_meta_parameters

    cfg = model_config("tiny", ["+model.lora={r: 2, targets: {llm: [q_proj, v_proj]}}"])
    torch.manual_seed(3)
    eager = build_model(cfg)
    torch.manual_seed(3)
    asked_meta = build_model(cfg, device="meta")
    assert not has_meta_parameters(asked_meta)
    lora_b = [p for n, p in asked_meta.named_parameters() if "lora_B" in n]
    assert lora_b and all(not p.any() for p in lora_b)
    assert set(eager.state_dict()) == set(asked_meta.state_dict())
    for name, value in eager.state_dict().items():
        assert torch.equal(asked_meta.state_dict()[name], value), name
