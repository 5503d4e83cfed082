"""`dsvl-train` as users run it: one-line config errors (exit 2), multiruns with a dir per job,
a crashed job that closes its W&B run and leaves the other jobs running, W&B offline files,
`dsvl-pipeline` chaining init_from and resuming, `dsvl-demo`'s summary. `dsvl-train` runs in forked children of
pytest (its own process and exit code, no second import of torch); one bad-config case in a fresh interpreter."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from train_fixtures import FAST

from ..forked import run_forked


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`dsvl-train ARGS...` in a forked child of pytest (tests/forked.py: its own process, exit code and stderr, no
    second import of torch / Lightning). Test-only callbacks named by `_target_` import from tests/stages, which
    tests/cli/conftest.py put on sys.path."""
    from dsvl.cli.train import main

    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "WANDB_API_KEY": None}
    return run_forked(main, ["dsvl-train", *args], env=env, cwd=cwd, timeout=300)


def _train_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m dsvl.cli.train ARGS...` in a fresh interpreter: the console script as users start it."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "dsvl.cli.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _wandb_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage.global_batch=30", "stage.global_batch=30 is not divisible by data.micro_batch_size=4"),
        ("stage.trainable=[adaptor,encoder]", "unknown part 'encoder'"),
        ("init_from=/nonexistent/last.ckpt", "init_from=/nonexistent/last.ckpt: no such file"),
        pytest.param("logger=tensorboard", "logger.tensorboard needs a package that is not installed",
                     marks=pytest.mark.skipif(bool(find_spec("tensorboard") or find_spec("tensorboardX")),
                                              reason="tensorboard is installed")),
    ],
)
def test_bad_config_is_one_line_and_exit_code_2(override: str, message: str, demo_data: Path, tmp_path: Path) -> None:
    _check_bad_config(_train, override, message, demo_data, tmp_path)


def test_bad_config_from_a_fresh_interpreter(demo_data: Path, tmp_path: Path) -> None:
    """The same check on one case through `python -m dsvl.cli.train` (the others run in forked children)."""
    _check_bad_config(_train_subprocess, "stage.global_batch=30", "stage.global_batch=30 is not divisible by data.micro_batch_size=4",
                      demo_data, tmp_path)


def _check_bad_config(run, override: str, message: str, demo_data: Path, tmp_path: Path) -> None:
    proc = run([f"paths.data_dir={demo_data}", *FAST, override, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dsvl-train: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before any training


@pytest.mark.slow
def test_multirun_two_jobs_each_in_its_own_dir_and_wandb_offline_metrics(demo_data: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    with_samples = [a for a in FAST if not a.startswith("callbacks.samples")]  # W&B sample tables on
    proc = _train(["-m", "experiment=demo/align", f"paths.data_dir={demo_data}", *with_samples, "logger=many_loggers",
                   "optim.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, lr in ((0, 1e-3), (1, 2e-3)):
        run = sweep / str(job)
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "csv" / "metrics.csv").is_file()
        assert OmegaConf.load(run / "config_resolved.yaml").optim.lr == lr
        files = _wandb_files(run)
        assert len(files) == 1  # one W&B run per job, in the job's dir
        assert files[0].name == f"run-{(run / 'wandb_run_id').read_text().strip()}.wandb"
        data = files[0].read_bytes()
        for name in (b"train/loss", b"train/loss_multimodal", b"train/lr/decay", b"train/grad_norm", b"train/device/items_per_sec",
                     b"val/mm_loss", b"val/samples", b"optim"):
            assert name in data, name


@pytest.mark.slow
def test_crashed_job_closes_its_wandb_run_and_the_multirun_goes_on(demo_data: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # job 0 crashes inside training (a callback raises at step 1, after W&B started); job 1 must still run
    proc = _train(["-m", "experiment=demo/align", f"paths.data_dir={demo_data}", *FAST, "logger=wandb",
                   "+callbacks.fail._target_=train_fixtures.FailAt", "+callbacks.fail.step=1,1000",
                   f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode != 0  # the sweep reports the failure at the end
    assert "interrupted at step 1" in proc.stderr
    crashed, ok = sweep / "0", sweep / "1"
    assert "closed the W&B run of a crashed job" in (crashed / "train.log").read_text()
    assert (ok / "checkpoints" / "last.ckpt").is_file()
    ok_runs = _wandb_files(ok)
    assert len(ok_runs) == 1 and _wandb_files(crashed) != ok_runs  # a fresh W&B run, not the crashed one reused
    assert b"train/loss" in ok_runs[0].read_bytes()


@pytest.mark.slow
def test_pipeline_chains_stages_and_a_rerun_skips_finished_ones_and_resumes_the_interrupted(demo_data: Path, tmp_path: Path) -> None:
    """Stage 2 of `dsvl-pipeline demo` dies after its step-1 checkpoint; the same command reruns: stage 1
    is not retrained, stage 2 continues from its step 1 (one CSV history), stage 3 runs from stage 2."""
    from dsvl.cli.pipeline import main

    out = tmp_path / "pipe"
    fast = [a for a in FAST if not a.startswith("logger=")]
    args = ["demo", "--out", str(out), f"paths.data_dir={demo_data}", *fast, "mc_val.limit=8", "auto_resume=true",
            "trainer.max_steps=3", "callbacks.model_checkpoint.every_n_train_steps=1", "logger=many_loggers"]
    with pytest.raises(RuntimeError, match="interrupted at step 2"):
        main([*args, "pretrain:+callbacks.fail._target_=train_fixtures.FailAt", "pretrain:+callbacks.fail.step=2"])
    align_ckpt = out / "align" / "checkpoints" / "last.ckpt"
    stamp = align_ckpt.stat().st_mtime_ns
    assert not (out / "pretrain" / "stage_metrics.json").exists()
    assert main(args) == 0
    assert align_ckpt.stat().st_mtime_ns == stamp  # stage 1 skipped, not retrained
    rows = [r for r in csv.DictReader((out / "pretrain" / "csv" / "metrics.csv").open()) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [0, 1, 2]  # steps 0-1 of the first process, 2 of the resumed one
    cfgs = {s: OmegaConf.load(out / s / "config_resolved.yaml") for s in ("align", "pretrain", "sft")}
    assert cfgs["align"].init_from is None and cfgs["pretrain"].run_group == cfgs["sft"].run_group
    assert Path(cfgs["sft"].init_from) == out / "pretrain" / "checkpoints" / "last.ckpt"
    assert json.loads((out / "sft" / "stage_metrics.json").read_text())["trainer/global_step"] == 3
    runs = {s: [p.name for p in _wandb_files(out / s)] for s in ("pretrain", "sft")}
    assert len(set(runs["pretrain"])) == 1  # two processes, one W&B run id
    assert runs["sft"] != runs["pretrain"]


@pytest.mark.slow
def test_demo_writes_summary_and_prints_its_path_last(demo_data: Path, tmp_path: Path, capsys) -> None:
    from dsvl.cli.demo import main

    out = tmp_path / "demo"
    assert main(["--out", str(out), "--data-dir", str(demo_data), *FAST, "mc_val.limit=8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(out / "summary.json")
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["mc_accuracy"] <= 1.0 and summary["text_ppl"] > 1.0
    assert set(summary["stages"]) == {"align", "pretrain", "sft"}
    assert all(s["steps"] == 2 and s["seconds"] > 0 and "train/loss" in s["metrics"] for s in summary["stages"].values())
    assert set(summary["stages"]["pretrain"]["final_loss"]) == {"text"}  # FAST: 2 steps, both text (warm-up)
    assert (out / "export" / "config.json").is_file() and (out / "export" / "tokenizer.json").is_file()
    assert Path(summary["plots"]["pretrain"]).is_file()
    assert any("multiple-choice accuracy" in line for line in lines)


@pytest.mark.slow
def test_optuna_search_runs_trials_in_their_own_dirs(demo_data: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    proc = _train(["experiment=demo/align", "hparams_search=optuna", f"paths.data_dir={demo_data}", *FAST,
                   "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                   "trainer.max_steps=20", f"hydra.sweep.dir={sweep}"], tmp_path)  # warm-up choices go to 20
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.name == "optuna" and results.best_value > 0 and "optim.lr" in results.best_params
    assert all((sweep / str(j) / "csv" / "metrics.csv").is_file() for j in (0, 1))
