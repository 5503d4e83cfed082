"""tools/plot_run.py and dsvl.eval.plots on a synthetic CSVLogger metrics.csv."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import os

from dsvl.eval.plots import find_metrics_csv, group_runs, plot_run, read_metrics

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["epoch", "step", "train/loss_text", "train/loss_multimodal", "train/language_ratio", "val/text_ppl", "val/mc_acc"]


def write_metrics(path: Path, steps: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for step in range(steps):
            row = {"epoch": 0, "step": step, "train/language_ratio": 1.0 - 0.3 * min(step / 20, 1.0)}
            row["train/loss_text" if step % 3 else "train/loss_multimodal"] = 5.0 / (1 + step)
            w.writerow(row)
            if step % 10 == 9:  # validation rows: Lightning writes them on their own lines
                w.writerow({"epoch": 0, "step": step, "val/text_ppl": 100.0 / (1 + step), "val/mc_acc": step / 40})
    return path


def test_plot_run_function_writes_png(tmp_path: Path) -> None:
    write_metrics(tmp_path / "run" / "csv" / "version_0" / "metrics.csv")
    series = read_metrics([tmp_path / "run" / "csv" / "version_0" / "metrics.csv"])
    assert len(series["val/mc_acc"]) == 4 and len(series["train/loss_multimodal"]) == 14
    out = plot_run(tmp_path / "run", tmp_path / "out" / "curves.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_runs_are_grouped_and_versions_merged(tmp_path: Path) -> None:
    first = write_metrics(tmp_path / "pipe" / "align" / "csv" / "metrics.csv", steps=10)
    write_metrics(tmp_path / "pipe" / "sft" / "csv" / "version_0" / "metrics.csv", steps=10)
    resumed = write_metrics(tmp_path / "pipe" / "sft" / "csv" / "version_1" / "metrics.csv", steps=20)
    os.utime(first, (1, 1))  # align was written first
    groups = group_runs(find_metrics_csv(tmp_path / "pipe"), tmp_path / "pipe")
    assert [label for label, _ in groups] == ["align", "sft"] and len(groups[1][1]) == 2
    assert len(read_metrics(groups[1][1])["train/language_ratio"]) == 20  # steps 0..19, resume overlaps merged
    assert resumed.exists() and plot_run(tmp_path / "pipe").stat().st_size > 10_000


def test_plot_run_tool(tmp_path: Path) -> None:
    write_metrics(tmp_path / "run" / "logs" / "metrics.csv")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_run.py"), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    png = tmp_path / "run" / "curves.png"
    assert res.stdout.strip() == str(png) and png.stat().st_size > 0


def test_plot_run_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        plot_run(tmp_path)
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_run.py"), str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "not found" in res.stderr
