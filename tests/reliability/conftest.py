"""Fixtures for the reliability tests: small demo data (made once) and `dsvl-train` process runners.

Every run is the tiny model on CPU, a few steps, one thread. Training runs fork the `dsvl-train` entry
point from this process (`run_train_forked`: a real process with its own exit code and signals, no second
import of torch); `run_train` starts the installed console script. The test hooks (reliability_hooks.py)
are importable in both (sys.path here, PYTHONPATH there).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ..forked import run_forked

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # reliability_hooks, named by `_target_` in forked runs
EXIT_USER_ERROR = 2


def dsvl_train_cmd() -> list[str]:
    """The installed console script (as users run it); `python -m` when the venv has no script."""
    script = Path(sys.executable).with_name("dsvl-train")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dsvl.cli.train"]


def run_train(overrides: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """`dsvl-train OVERRIDES...` in a subprocess (one CPU thread, offline, test hooks importable)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(dsvl_train_cmd() + list(overrides), capture_output=True, text=True, timeout=timeout, env=env)


def run_train_forked(overrides: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """`dsvl-train OVERRIDES...` in a forked child of this process: the same entry point (`dsvl.cli.train:main`)
    in a separate process (its own signals, exit code, SIGKILL), without paying the torch / Lightning /
    transformers imports again (tests/forked.py)."""
    from dsvl.cli.train import main

    return run_forked(main, ["dsvl-train", *overrides], env={"HYDRA_FULL_ERROR": None}, timeout=timeout)


def png_bytes(size: int = 32, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def text_sample(i: int) -> dict:
    return {"json": {"modality": "text", "category": "fact", "text": f"fact {i}: a red square has four corners."}}


def mm_sample(i: int) -> dict:
    return {"json": {"modality": "multimodal", "category": "caption", "text": f"<image_placeholder>shape {i}, a red square."},
            "0.png": png_bytes()}


def write_shard(rows: list[dict], out: Path, prefix: str) -> Path:
    """One shard `<out>/<prefix>-000000.tar` holding `rows` in order, keys `<prefix>_0000`, ..."""
    from dsvl.data.shards import write_shards

    samples = [dict(r, __key__=f"{prefix}_{i:04d}") for i, r in enumerate(rows)]
    return write_shards(samples, out, prefix=prefix, max_count=10_000)[0]


def bad_prefixed_shards(out: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Two text and two multimodal shards, each starting with two bad samples of its own kind, then 20
    good ones: a reader that got one good sample of a shard has counted its bad ones, whatever it reads
    next. Returns the shard paths per modality and the planted counts per reason."""
    bad = {
        "text_a": ("bad_json", {"json": b"{oops"}),
        "text_b": ("empty_text", {"json": {"modality": "text", "text": " "}}),
        "mm_a": ("bad_image", {"json": {"modality": "multimodal", "text": "<image_placeholder>x"}, "0.png": b"junk"}),
        "mm_b": ("placeholder_mismatch", {"json": {"modality": "multimodal", "text": "<image_placeholder>" * 2 + "x"},
                                          "0.png": png_bytes()}),
    }
    urls: dict[str, list[str]] = {"text": [], "multimodal": []}
    for name, (_, sample) in bad.items():
        modality = "text" if name.startswith("text") else "multimodal"
        good = [text_sample(i) if modality == "text" else mm_sample(i) for i in range(20)]
        urls[modality].append(str(write_shard([sample, sample, *good], out, name)))
    return urls, {reason: 2 for reason, _ in sorted(bad.values())}


def read_records(path: Path) -> list[dict]:
    """The StepRecorder lines of one run."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from dsvl.data.demo import make_demo_data

    out = tmp_path_factory.mktemp("reliability_demo")
    make_demo_data(out, seed=0, train_size=96, eval_size=16, shard_size=32)
    return out


def stage2(data_dir: Path, run_dir: Path, *extra: str, max_steps: int = 5, workers: int = 2, micro_batches: int = 2) -> list[str]:
    """A few-step stage-2 run of the tiny model: grouped text / multimodal steps of `micro_batches` micro-batches of 2."""
    return [
        "experiment=demo/pretrain", f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={max_steps}", f"stage.global_batch={2 * micro_batches}", "data.micro_batch_size=2", f"data.num_workers={workers}",
        "data.max_length=128", "data.schedule.warmup_steps=2", "data.schedule.target=0.5", "scheduler.warmup_steps=1",
        "validate_at_end=false", "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.samples=null",
        "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", *extra,
    ]


def recorder(path: Path) -> list[str]:
    return ["+callbacks.record._target_=reliability_hooks.StepRecorder", f"+callbacks.record.path='{path}'"]


def signal_at(step: int, micro: int, sig: str) -> list[str]:
    return ["+callbacks.hook._target_=reliability_hooks.SignalAt", f"+callbacks.hook.step={step}",
            f"+callbacks.hook.micro={micro}", f"+callbacks.hook.signal={sig}"]
