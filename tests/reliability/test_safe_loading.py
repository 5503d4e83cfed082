"""Checkpoints are never a way in: weights-only loading, a pickle that would run code is refused
(and never runs), no trust_remote_code anywhere by default."""
from __future__ import annotations

import ast
import io
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from .conftest import EXIT_USER_ERROR, run_train_forked

from dsvl.model.safe_load import UnsafeCheckpointError, check_checkpoint, safe_torch_load
from dsvl.stages.checkpoint import InitFromError, load_init_weights

SRC = Path(__file__).resolve().parents[2] / "src" / "dsvl"


class _Payload:
    """Unpickling this calls os.makedirs(marker): proof that pickle code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.fixture()
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(2)}, "global_step": 3, "x": _Payload(marker)}, path)
    return path, marker


def test_malicious_pickle_refused_and_never_executed(evil):
    path, marker = evil
    for load in (safe_torch_load, check_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.ckpt: it calls os\.makedirs"):
            load(path)
    with pytest.raises(InitFromError, match="init_from=.*refusing to load"):
        load_init_weights(torch.nn.Linear(2, 2), path)
    assert not marker.exists()


def test_plain_weights_load_and_junk_is_one_line(tmp_path):
    state = {"w": torch.arange(4.0)}
    torch.save({"state_dict": state, "step": 1}, tmp_path / "ok.ckpt")
    assert torch.equal(check_checkpoint(tmp_path / "ok.ckpt")["state_dict"]["w"], state["w"])
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UnsafeCheckpointError, match="cannot load .*junk.ckpt"):
        safe_torch_load(tmp_path / "junk.ckpt")


@pytest.mark.parametrize("key, sharded", [("ckpt_path", False), ("init_from", False), ("init_from", True)])
def test_dsvl_train_refuses_malicious_checkpoint(key, sharded, evil, demo_data, tmp_path):
    """A `.ckpt` file, or a sharded `.ckpt` directory (trainer=fsdp) whose DCP index would run code when unpickled."""
    path, marker = evil
    if sharded:
        from ..distributed.sharded_ckpt import save_sharded

        path = save_sharded(tmp_path / "evil_dir.ckpt", {"w": torch.zeros(2)})
        (path / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    proc = run_train_forked(["experiment=demo/pretrain", f"paths.data_dir={demo_data}", f"hydra.run.dir={tmp_path / 'run'}",
                             f"{key}={path}"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_USER_ERROR, out[-2000:]
    assert re.search(r"dsvl-train: error: .*refusing to load .*evil(_dir\.ckpt/\.metadata|\.ckpt): it calls os\.makedirs", proc.stderr)
    assert "Traceback" not in out and "dsvl.cli.models" not in out  # refused before any weights were built
    assert not marker.exists()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def test_no_unsafe_loading_in_the_library():
    """The library's only torch.load is safe_load's weights_only=True one; no pickle.load(s), no
    trust_remote_code=True, and every Lightning fit/validate that loads a checkpoint passes weights_only=True.
    Its only unpickler is safe_load's for DCP indexes, which refuses every global but DCP's metadata classes."""
    torch_loads, pickle_loads, remote, lightning_loads, unpicklers = [], [], [], [], []
    for f in SRC.rglob("*.py"):
        tree = ast.parse(f.read_text())
        unpicklers += [(f.name, c.name) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                       and any("Unpickler" in ast.unparse(b) for b in c.bases)]
        for call in _calls(tree):
            name, kw = _name(call), {k.arg: k.value for k in call.keywords}
            if name == "torch.load":
                torch_loads.append((f.name, ast.unparse(kw["weights_only"]) if "weights_only" in kw else None))
            if name in ("pickle.load", "pickle.loads", "torch.serialization.load"):
                pickle_loads.append(f.name)
            if "trust_remote_code" in kw and ast.unparse(kw["trust_remote_code"]) != "False":
                remote.append(f.name)
            if name.endswith((".fit", ".validate", ".test")) and "ckpt_path" in kw:
                lightning_loads.append((f.name, ast.unparse(kw["weights_only"]) if "weights_only" in kw else None))
    assert torch_loads == [("safe_load.py", "True")], torch_loads
    assert not pickle_loads and not remote, (pickle_loads, remote)
    assert all(w == "True" for _, w in lightning_loads), lightning_loads
    assert unpicklers == [("safe_load.py", "_IndexUnpickler")], unpicklers
    from dsvl.model.safe_load import _IndexUnpickler

    with pytest.raises(pickle.UnpicklingError, match="unsupported GLOBAL os.makedirs"):
        _IndexUnpickler(io.BytesIO(pickle.dumps(_Payload(Path("never"))))).load()


def test_hf_loader_rejects_trust_remote_code(tmp_path):
    from dsvl.model import VisionLanguageModel

    with pytest.raises(ValueError, match="trust_remote_code"):
        VisionLanguageModel.from_pretrained(tmp_path, trust_remote_code=True)


def test_a_checkpoint_config_cannot_run_commands(tmp_path):
    """A stage `.ckpt` is loaded weights-only, and its saved `model_config` is instantiated by Hydra, whose target
    blocklist refuses executables: a tampered config is one line, and the command never runs."""
    from dsvl.cli.models import load_stage_checkpoint
    from dsvl.errors import ConfigError

    marker = tmp_path / "ran"
    node = {"_target_": "os.system", "command": f"touch {marker}"}
    config = {"vision": node, "adaptor": {"_target_": "dsvl.model.adaptor.MLPGelu"}, "llm": node, "image_token_id": 1}
    path = tmp_path / "tampered.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model_config": config}}, path)
    with pytest.raises(ConfigError, match=r"^model\.vision: Target 'os\.system' is blocklisted") as err:
        load_stage_checkpoint(path)
    assert "\n" not in str(err.value) and not marker.exists()
