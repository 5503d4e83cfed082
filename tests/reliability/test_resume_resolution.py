"""`ckpt_path=last`, `auto_resume=true` and explicit paths resolve to what `trainer.fit` gets (or one-line errors),
every file checked to load safely first."""
from __future__ import annotations

import pytest
import torch

from dsvl.cli._config import compose
from dsvl.cli.train import resume_from
from dsvl.cli.validate import check_checkpoints
from dsvl.errors import CheckpointError, ConfigError
from dsvl.model.safe_load import UnsafeCheckpointError


def _cfg(tmp_path, *overrides: str):
    return compose(["experiment=demo/pretrain", *overrides], output_dir=tmp_path / "run")


def _save_last(tmp_path, payload=None) -> str:
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload if payload is not None else {"global_step": 7, "state_dict": {"w": torch.ones(1)}}, ckpt)
    return str(ckpt)


def test_fresh_run_without_checkpoint(tmp_path):
    assert resume_from(_cfg(tmp_path)) is None
    assert resume_from(_cfg(tmp_path, "auto_resume=true")) is None  # nothing yet: start fresh
    with pytest.raises(CheckpointError, match=r"ckpt_path=last: no last.ckpt in .*run/checkpoints; point hydra.run.dir"):
        resume_from(_cfg(tmp_path, "ckpt_path=last"))
    # an explicit path is checked once, by validate_config, before resume_from runs
    with pytest.raises(CheckpointError, match=r"ckpt_path=.*nope.ckpt: no such file or checkpoint directory \(accepted: a .ckpt file"):
        check_checkpoints({"ckpt_path": str(tmp_path / "nope.ckpt")})


def test_last_and_auto_resume_find_the_run_checkpoint(tmp_path):
    last = _save_last(tmp_path)
    assert resume_from(_cfg(tmp_path, "ckpt_path=last")) == "last"  # Lightning's own "last" lookup
    assert resume_from(_cfg(tmp_path, f"ckpt_path={last}")) == last
    init = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": {}}, init)
    cfg = _cfg(tmp_path, "auto_resume=true", f"init_from={init}")
    assert resume_from(cfg) == "last" and cfg.init_from is None  # a restarted stage continues, not restarts
    with pytest.raises(ConfigError, match="not both"):  # the value checks refuse it before resume_from runs
        check_checkpoints({"ckpt_path": last, "init_from": str(init)})


def test_unsafe_last_checkpoint_is_refused(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "PWNED"),))

    _save_last(tmp_path, {"global_step": 1, "x": Payload()})
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        resume_from(_cfg(tmp_path, "auto_resume=true"))
    assert not (tmp_path / "PWNED").exists()


def test_sharded_checkpoint_directories_resume_and_are_checked(tmp_path):
    """trainer=fsdp writes every .ckpt as a torch.distributed.checkpoint directory: `last`, `auto_resume` and an
    explicit path find it, its index (.metadata) and non-tensor state (meta.pt) are opened the safe way, and it is
    an init_from too."""
    import os
    import pickle

    from ..distributed.sharded_ckpt import save_sharded

    last = save_sharded(tmp_path / "run" / "checkpoints" / "last.ckpt", {"w": torch.ones(2)})
    assert resume_from(_cfg(tmp_path, "ckpt_path=last")) == "last"
    assert resume_from(_cfg(tmp_path, "auto_resume=true")) == "last"
    assert resume_from(_cfg(tmp_path, f"ckpt_path={last}")) == str(last)
    check_checkpoints({"ckpt_path": str(last)})
    check_checkpoints({"init_from": str(last)})

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "PWNED"),))

    index = (last / ".metadata").read_bytes()
    (last / ".metadata").write_bytes(pickle.dumps(Payload()))  # DCP's own reader would run it
    for key in ("ckpt_path", "init_from"):
        with pytest.raises(CheckpointError, match=rf"{key}=.*refusing to load .*\.metadata: it calls os\.makedirs"):
            check_checkpoints({key: str(last)})
    (last / ".metadata").write_bytes(index)
    torch.save({"global_step": 3, "x": Payload()}, last / "meta.pt")
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        resume_from(_cfg(tmp_path, "auto_resume=true"))
    assert not (tmp_path / "PWNED").exists()
