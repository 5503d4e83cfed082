"""`init_from` of a sharded checkpoint (`trainer=fsdp` writes every `.ckpt` as a torch.distributed.checkpoint
directory) in one process: a model built whole (single device, DDP, LoRA) and one built on meta and materialised
(the FSDP2 path, here unsharded) start from exactly the saved weights, read through the same DCP reader; the
optimizer state in the directory is not read; eval / chat rebuild the stage's model from it. Whatever does not fit is a one-line `CheckpointError` (exit 2 in the
CLI, see tests/reliability/test_safe_loading.py): a plain directory, a missing, an extra or a resized weight, an
unreadable index or shard, a DCP directory without model weights; the meta paths' readers (FSDP2's `materialize`,
ZeRO-3's `materialize_in_units`) start theirs with `init_from=<path>` too. (2-rank FSDP2: tests/distributed/test_meta_build.py.)"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dsvl.cli.models import build_model, load_stage_checkpoint
from dsvl.cli.presets import model_config
from dsvl.errors import CheckpointError
from dsvl.model import materialize
from dsvl.model.materialize import materialize_in_units
from dsvl.stages.checkpoint import load_init_weights, read_checkpoint
from dsvl.stages.strategies import checkpoint_source, defer_weights

from .sharded_ckpt import save_sharded


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[dict, dict[str, torch.Tensor], Path]:
    cfg = model_config("tiny")
    torch.manual_seed(1)
    state = build_model(cfg).state_dict()
    adam = {"state": {"llm.lm_head.weight": {"exp_avg": torch.ones(3), "step": torch.tensor(2.0)}},
            "param_groups": [{"lr": 0.1, "params": ["llm.lm_head.weight"]}]}
    meta = {"global_step": 3, "hyper_parameters": {"stage_name": "align", "model_config": cfg}}  # as a stage saves them
    path = save_sharded(tmp_path_factory.mktemp("stage1") / "last.ckpt", state, meta=meta, optimizer=adam)
    return cfg, state, path


@pytest.fixture(scope="module")
def target(saved) -> torch.nn.Module:
    torch.manual_seed(2)
    return build_model(saved[0])


def _equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(state) <= set(got)
    for name, value in state.items():
        assert torch.equal(got[name], value), name


def test_whole_and_meta_builds_start_from_the_saved_weights(saved, target):
    cfg, state, path = saved
    assert not torch.equal(target.state_dict()["llm.lm_head.weight"], state["llm.lm_head.weight"])
    load_init_weights(target, path)  # built whole: every tensor read
    _equal(target, state)
    on_meta = build_model(cfg, device="meta")  # the FSDP2 path's reader, into unsharded tensors
    _equal(materialize(on_meta, seed=5, sources=[checkpoint_source(path)]), state)
    ckpt = read_checkpoint(path)  # meta.pt (loop state, hyperparameters) with the model weights; no optimizer state
    assert ckpt["global_step"] == 3 and not any(k.startswith("optimizer") for k in ckpt)
    stage = load_stage_checkpoint(path)  # eval / chat: the model rebuilt from the saved config
    assert stage.hparams["stage_name"] == "align"
    _equal(stage.model, state)


def test_fsdp_path_loads_a_model_built_whole_at_once(saved):
    """Under trainer=fsdp, `init_from` is deferred to the shards of a meta-built model; a model built whole there
    (`model.lora`) has no shards to come: it loads at once (it was once recorded and never read)."""
    cfg, state, path = saved
    torch.manual_seed(3)
    whole = build_model(cfg)
    defer_weights(whole, path)
    assert not hasattr(whole, "deferred_weights")
    _equal(whole, state)
    on_meta = build_model(cfg, device="meta")
    defer_weights(on_meta, path)
    assert on_meta.deferred_weights == [checkpoint_source(path)]


def _broken(case: str, saved, tmp: Path) -> tuple[Path, str]:
    """A checkpoint directory broken as `case` says, and the error expected of it."""
    cfg, state, path = saved
    bad = tmp / "bad.ckpt"
    if case == "plain directory":
        bad.mkdir()
        (bad / "meta.pt").write_bytes(b"")
        return bad, r"a directory without config\.json is not a model \(accepted: a \.ckpt file \(a directory under trainer=fsdp\)"
    if case == "missing weight":
        return save_sharded(bad, {k: v for k, v in state.items() if k != "adaptor.proj.weight"}), \
            r"1 missing, 0 unexpected: adaptor\.proj\.weight|not in the checkpoint, e\.g\. \['adaptor\.proj\.weight'\]"
    if case == "extra weight":
        return save_sharded(bad, {**state, "adaptor.extra": torch.zeros(2)}), \
            r"0 missing, 1 unexpected: adaptor\.extra|1 checkpoint tensors are not in this model, e\.g\. \['state_dict\.model\.adaptor\.extra'\]"
    if case == "resized weight":
        return save_sharded(bad, {**state, "llm.lm_head.weight": state["llm.lm_head.weight"][:-1]}), \
            r"size mismatch for llm\.lm_head\.weight|state_dict\.model\.llm\.lm_head\.weight: shape"
    if case == "not dsvl":
        save_sharded(bad, {})
        return bad, "a sharded checkpoint without model weights"
    shutil.copytree(path, bad)
    if case == "corrupt index":
        (bad / ".metadata").write_bytes(b"\x80\x04not a pickle")
        return bad, r"cannot load .*\.metadata: not a torch\.distributed\.checkpoint index"
    assert case == "missing shard"
    next(bad.glob("*.distcp")).unlink()
    return bad, "cannot load .*bad.ckpt: a shard is unreadable"


@pytest.mark.parametrize("case", ["plain directory", "missing weight", "extra weight", "resized weight", "not dsvl",
                                  "corrupt index", "missing shard"])
def test_unusable_sharded_checkpoints_are_one_line_errors(case, saved, target, tmp_path):
    path, message = _broken(case, saved, tmp_path)
    with pytest.raises(CheckpointError, match=message) as whole:
        load_init_weights(target, path)
    assert "\n" not in str(whole.value) and str(whole.value).startswith(f"init_from={path}")
    if case in ("missing weight", "extra weight", "resized weight", "missing shard"):  # the FSDP2 and ZeRO-3 paths' readers
        for build in (materialize, lambda m, sources: materialize_in_units(m, lambda params: None, sources=sources)):
            with pytest.raises(CheckpointError, match=message) as sharded:
                build(build_model(saved[0], device="meta"), sources=[checkpoint_source(path)])
            assert "\n" not in str(sharded.value) and str(sharded.value).startswith(f"init_from={path}: ")
