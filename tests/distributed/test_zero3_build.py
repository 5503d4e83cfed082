"""Partitioned build under DeepSpeed ZeRO-3 (issue 14, item 1), two processes on CPU (gloo) in one torchrun launch
(tests/distributed/zero3_worker.py): a model built on meta and materialised unit by unit, each unit partitioned as
soon as it is filled, holds on every rank exactly its slice of each parameter of the same model built whole in one
process with the same seed (untied and tied embeddings; buffers whole and equal), and gathered it is that model
(cast to bf16 under a bf16 config). The
same for loading a `model.pretrained` export, an `init_from` `.ckpt` and an `init_from` sharded (DCP) directory. No
rank holds more than a fraction of the model's parameters whole at once (a whole build would hold all). Then a stage
fits 2 steps through Lightning's `DeepSpeedStrategy` at stage 3 (run on CPU by the test-only `zero3_cpu`); the
DeepSpeed checkpoint it writes is a resume source for dsvl and resumes; as `init_from` it is refused in one line naming
Lightning's converter, whose output loads as `init_from` with the trained weights."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from .test_meta_build import run_two_ranks

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zero3")


@pytest.fixture(scope="module")
def reports(out) -> list[dict]:
    return run_two_ranks(HERE / "zero3_worker.py", out)


@pytest.mark.parametrize("tie", [False, True])
def test_random_init_into_partitions_equals_the_whole_model_with_the_same_seed(reports, tie):
    for report in reports:
        init = report[f"init_tie{tie}"]
        assert init["mismatches"] == [] and init["gathered_mismatches"] == []
        assert init["partitioned"] >= init["parameters"] and init["tied"] is tie
        # at most about one unit whole at a time (a tied embedding waits for its head): a whole build holds `total`
        assert 0 < init["peak"] < 0.5 * init["total"]


def test_a_bf16_config_partitions_the_same_init_in_bf16(reports):
    for report in reports:
        init = report["init_bf16"]
        assert init["mismatches"] == [] and init["gathered_mismatches"] == [] and init["dtypes"] == ["torch.bfloat16"]
    assert reports[0]["init_tieTrue"]["dtypes"] == ["torch.float32"]


@pytest.mark.parametrize("source", ["model.pretrained", "ckpt", "dcp"])
def test_checkpoints_load_into_partitions_unit_by_unit(reports, source):
    for report in reports:
        load = report[f"load_{source}"]
        assert load["mismatches"] == [] and load["gathered_mismatches"] == [] and load["partitioned"] >= load["parameters"]
        assert load["peak"] == reports[0]["load_ckpt"]["peak"] < reports[0]["init_tieFalse"]["total"] / 2


def test_a_stage_fits_under_lightnings_deepspeed_strategy(reports):
    for report in reports:
        fit = report["fit"]
        assert fit["global_step"] == 2 and math.isfinite(fit["loss"]) and fit["zero_params"]
        assert fit["loss"] == reports[0]["fit"]["loss"]  # the global token mean, the same on both ranks
        assert fit["changed_parts"] == ["llm"]  # trainable=[llm]: the frozen towers and adaptor kept their init
        assert fit["whole_elements"] < 0.5 * fit["total"]


def test_a_deepspeed_checkpoint_resumes_and_gathered_is_an_init_from(reports, out, tmp_path):
    import torch
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    from dsvl.cli.presets import model_config
    from dsvl.cli.validate import check_checkpoints
    from dsvl.errors import CheckpointError
    from dsvl.cli.models import build_model
    from dsvl.model.safe_load import check_checkpoint, is_checkpoint
    from dsvl.stages.checkpoint import load_init_weights

    ckpt = out / "ds.ckpt"  # a directory: `latest`, the per-rank model and optimizer states
    assert is_checkpoint(ckpt) and check_checkpoint(ckpt)["global_step"] == 2  # opened weights-only, every file
    check_checkpoints({"ckpt_path": str(ckpt)})
    assert all(report["fit"]["resumed_step"] == 4 for report in reports)  # Lightning resumed it at step 2
    with pytest.raises(CheckpointError, match="DeepSpeed checkpoint directory.*convert_zero_checkpoint_to_fp32") as err:
        check_checkpoints({"init_from": str(ckpt)})
    assert "\n" not in str(err.value)
    convert_zero_checkpoint_to_fp32_state_dict(str(ckpt), str(tmp_path / "weights.ckpt"))
    model = build_model(model_config("tiny"))
    load_init_weights(model, tmp_path / "weights.ckpt")
    trained = torch.load(out / "trained.pt", weights_only=True)
    assert [n for n, p in model.named_parameters() if not torch.equal(p, trained[n])] == []
