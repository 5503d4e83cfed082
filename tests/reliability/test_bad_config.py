"""Bad configs fail fast and clearly: one line `dsvl-train: error: ...` naming the key and what is
accepted, exit code 2, no traceback, and nothing built (no model, no checkpoint dir).

Each case runs the `dsvl-train` entry point in its own process: forked from the test process (no second
import of torch and Lightning); one case also through the installed console script."""
from __future__ import annotations

import pytest
from .conftest import EXIT_USER_ERROR, run_train, run_train_forked

CASES = {
    "unknown_preset": (["model=tiny_nope"], ["model=tiny_nope", "accepted:", "tiny", "deepseek_vl_7b"]),
    "unknown_group_option": (["model/adaptor=nope"], ["model/adaptor=nope", "accepted:", "mlp_gelu", "hybrid_split_mlp_gelu"]),
    "unknown_recipe": (["experiment=demo/nope"], ["experiment=demo/nope", "accepted:", "demo/pretrain"]),
    "unknown_key": (["trainer.max_stepz=3"], ["trainer.max_stepz", "no such key"]),
    "adaptor_vs_llm": (["model.adaptor.out_dim=48"], ["model.adaptor.out_dim=48", "hidden_size", "64"]),
    "adaptor_vs_tower": (["model.adaptor.low_in_dim=7"], ["model.adaptor.low_in_dim=7", "accepted: 32"]),
    "language_ratio": (["data.schedule.target=1.5"], ["data.schedule", "target must be in [0, 1], got 1.5"]),
    "warmup_longer_than_training": (["trainer.max_steps=10", "scheduler.warmup_steps=50"],
                                    ["scheduler.warmup_steps=50", "trainer.max_steps=10", "accepted: 0 to 10"]),
    "missing_data_path": (["data.train_sources.text.urls=/nonexistent/shards"],
                          ["data.train_sources", "'text'", "/nonexistent/shards", "no shards", "accepted:"]),
    "global_batch_not_divisible": (["stage.global_batch=10"], ["stage.global_batch=10", "data.micro_batch_size=8", "world size 1"]),
    "nonfinite_limit": (["callbacks.nonfinite_guard.max_consecutive=0"],
                        ["callbacks.nonfinite_guard.max_consecutive=0", "integer >= 1"]),
    # raised inside hydra.utils.instantiate (wrapped in InstantiationException): still one line
    "error_inside_instantiate": (["data.mode=bogus"], ["data mode must be one of", "grouped", "'bogus'"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_is_one_line_exit_2(name, demo_data, tmp_path):
    overrides, expected = CASES[name]
    proc = run_train_forked(["experiment=demo/pretrain", f"paths.data_dir={demo_data}", f"hydra.run.dir={tmp_path / 'run'}", *overrides])
    _check(proc, expected, tmp_path)


def test_console_script_reports_one_line(demo_data, tmp_path):
    overrides, expected = CASES["global_batch_not_divisible"]
    proc = run_train(["experiment=demo/pretrain", f"paths.data_dir={demo_data}", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
                     timeout=180)
    _check(proc, expected, tmp_path)


def _check(proc, expected: list[str], tmp_path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_USER_ERROR, out[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dsvl-train: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for part in expected:
        assert part in errors[0], errors[0]
    assert "Traceback" not in out
    assert "dsvl.model.build" not in out  # no model was built
    assert not (tmp_path / "run" / "checkpoints").exists()
