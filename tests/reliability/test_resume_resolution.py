"""`ckpt_path=last`, `auto_resume=true` and explicit paths resolve to the right file (or one-line errors)."""
from __future__ import annotations

import pytest
import torch

from dsvl.cli._config import compose
from dsvl.model.safe_load import UnsafeCheckpointError
from dsvl.stages.resume import ResumeError, resolve_ckpt_path


def _cfg(tmp_path, *overrides: str):
    return compose(["experiment=demo/pretrain", *overrides], output_dir=tmp_path / "run")


def _save_last(tmp_path, payload=None) -> str:
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload if payload is not None else {"global_step": 7, "state_dict": {"w": torch.ones(1)}}, ckpt)
    return str(ckpt)


def test_fresh_run_without_checkpoint(tmp_path):
    assert resolve_ckpt_path(_cfg(tmp_path)) is None
    assert resolve_ckpt_path(_cfg(tmp_path, "auto_resume=true")) is None  # nothing yet: start fresh
    with pytest.raises(ResumeError, match=r"ckpt_path=last: no last.ckpt in .*run/checkpoints; point hydra.run.dir"):
        resolve_ckpt_path(_cfg(tmp_path, "ckpt_path=last"))
    with pytest.raises(ResumeError, match=r"ckpt_path=.*nope.ckpt: no such checkpoint file \(accepted: a .ckpt file, or 'last'\)"):
        resolve_ckpt_path(_cfg(tmp_path, f"ckpt_path={tmp_path / 'nope.ckpt'}"))


def test_last_and_auto_resume_find_the_run_checkpoint(tmp_path):
    last = _save_last(tmp_path)
    assert resolve_ckpt_path(_cfg(tmp_path, "ckpt_path=last")) == last
    assert resolve_ckpt_path(_cfg(tmp_path, f"ckpt_path={last}")) == last
    init = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": {}}, init)
    cfg = _cfg(tmp_path, "auto_resume=true", f"init_from={init}")
    assert resolve_ckpt_path(cfg) == last and cfg.init_from is None  # a restarted stage continues, not restarts


def test_unsafe_last_checkpoint_is_refused(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "PWNED"),))

    _save_last(tmp_path, {"global_step": 1, "x": Payload()})
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        resolve_ckpt_path(_cfg(tmp_path, "auto_resume=true"))
    assert not (tmp_path / "PWNED").exists()
