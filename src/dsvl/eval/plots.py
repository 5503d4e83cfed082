"""Training curves of a run from Lightning's CSVLogger `metrics.csv`, as one PNG.

Panels: loss by modality (`train/loss_text`, `train/loss_multimodal`), `val/text_ppl`,
`val/mc_acc` and `train/language_ratio`, each against the global step. Metrics a run did not
log are left out of their panel (a stage-1 run has no text loss), never an error.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["PANELS", "find_metrics_csv", "read_metrics", "plot_run"]

# (panel title, y label, metric names, log scale)
PANELS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("training loss by modality", "loss", ("train/loss_text", "train/loss_multimodal", "train/loss"), False),
    ("held-out text perplexity", "perplexity", ("val/text_ppl",), True),
    ("multiple-choice accuracy (PPL)", "accuracy", ("val/mc_acc",), False),
    ("language ratio", "share of text steps", ("train/language_ratio",), False),
)


def find_metrics_csv(run_dir: str | Path) -> list[Path]:
    """All `metrics.csv` files under a run dir (one per CSVLogger version), oldest first."""
    root = Path(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"run directory not found: {root}")
    if root.is_file():
        return [root]
    found = sorted(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {root} (was the run logged with the CSV logger?)")
    return found


def read_metrics(paths: list[Path]) -> dict[str, list[tuple[float, float]]]:
    """metric name -> sorted (step, value) points; empty cells and non-numbers skipped.

    Several files (resumed runs write new versions) are merged; a later file wins on equal steps.
    """
    series: dict[str, dict[float, float]] = {}
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                step = _number(row.get("step"))
                if step is None:
                    continue
                for name, cell in row.items():
                    if name in ("step", "epoch") or name is None:
                        continue
                    value = _number(cell)
                    if value is not None:
                        series.setdefault(name, {})[step] = value
    return {name: sorted(points.items()) for name, points in series.items()}


def _number(cell: str | None) -> float | None:
    try:
        value = float(cell) if cell not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def plot_run(run_dir: str | Path, output: str | Path | None = None, title: str | None = None) -> Path:
    """Write the run's curves to `output` (default `RUN_DIR/curves.png`) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = find_metrics_csv(run_dir)
    series = read_metrics(paths)
    root = Path(run_dir)
    output = Path(output) if output is not None else (root if root.is_dir() else root.parent) / "curves.png"
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
    plotted = 0
    for ax, (panel, ylabel, names, log_scale) in zip(axes.flat, PANELS):
        # "train/loss" only when neither per-modality loss was logged
        shown = [n for n in names if n in series and not (n == "train/loss" and any(m in series for m in names[:-1]))]
        for name in shown:
            steps, values = zip(*series[name])
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
            plotted += 1
        if shown:
            ax.legend(fontsize=8)
            if log_scale and all(v > 0 for n in shown for _, v in series[n]):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if not plotted:
        plt.close(fig)
        raise ValueError(f"none of the plotted metrics ({', '.join(n for p in PANELS for n in p[2])}) is in {paths[-1]}")
    fig.suptitle(title or root.resolve().name)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    log.info("wrote %s from %d metrics file(s)", output, len(paths))
    return output
