"""Training curves of a run from Lightning's CSVLogger `metrics.csv`, as one PNG (`PANELS`).

Metrics a run did not log are left out of their panel (a stage-1 run has no text loss), never an
error. A directory holding several runs (e.g. the demo's stages) is drawn run after run on one step
axis, in the order they were written; `version_N` logs of one run (resumes) are merged.
"""
from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path

log = logging.getLogger(__name__)

# (panel title, y label, metric names, log scale); "train/loss" is drawn only without per-modality losses
PANELS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("loss by modality", "loss", ("train/loss_text", "train/loss_multimodal", "val/mm_loss", "train/loss"), False),
    ("held-out text perplexity", "perplexity", ("val/text_ppl",), True),
    ("multiple-choice accuracy (PPL)", "accuracy", ("val/mc_acc",), False),
    ("language ratio", "share of text steps", ("train/language_ratio", "train/text_share"), False),
)
_VERSION_DIR = re.compile(r"^version_\d+$")
Series = dict[str, list[tuple[float, float]]]


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


def group_runs(paths: list[Path], root: Path) -> list[tuple[str, list[Path]]]:
    """(label, files) per run, oldest run first: files differing only by `version_N` are one run."""
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        run = path.parent
        while _VERSION_DIR.match(run.name):
            run = run.parent
        groups.setdefault(run, []).append(path)
    base = root if root.is_dir() else root.parent
    labels = {run: (run.relative_to(base).parts if run != base and base in run.parents else (run.name,)) for run in groups}
    # drop a logger folder name all runs share ("csv", "logs"): the stage names are what differ
    if len(groups) > 1 and len({p[-1] for p in labels.values()}) == 1 and all(len(p) > 1 for p in labels.values()):
        labels = {run: parts[:-1] for run, parts in labels.items()}
    ordered = sorted(groups, key=lambda run: min(f.stat().st_mtime for f in groups[run]))
    return [("/".join(labels[run]) or run.name, groups[run]) for run in ordered]


def read_metrics(paths: list[Path]) -> dict[str, list[tuple[float, float]]]:
    """metric name -> sorted (step, value) points; empty cells and non-numbers skipped. Several
    files (resumed runs write new versions) are merged; a later file wins on equal steps."""
    series: dict[str, dict[float, float]] = {}
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                step = _number(row.get("step"))
                for name, cell in row.items():
                    value = _number(cell) if name not in ("step", "epoch", None) else None
                    if step is not None and value is not None:
                        series.setdefault(name, {})[step] = value
    return {name: sorted(points.items()) for name, points in series.items()}


def _number(cell: str | None) -> float | None:
    try:
        value = float(cell or "nan")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _concatenate(runs: list[tuple[str, Series]]) -> tuple[Series, list[tuple[float, str]]]:
    """One series per metric over all runs, each run shifted past the previous one's last step;
    a nan point between runs breaks the line. Returns the series and (start step, label) per run."""
    merged: Series = {}
    starts: list[tuple[float, str]] = []
    offset = 0.0
    for label, series in runs:
        starts.append((offset, label))
        last = 0.0
        for name, points in series.items():
            if merged.get(name):
                merged[name].append((offset, math.nan))
            merged.setdefault(name, []).extend((offset + step, value) for step, value in points)
            last = max(last, max(step for step, _ in points))
        offset += last + 1
    return merged, starts


def plot_run(run_dir: str | Path, output: str | Path | None = None, title: str | None = None) -> Path:
    """Write the run's curves to `output` (default `RUN_DIR/curves.png`) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(run_dir)
    paths = find_metrics_csv(root)
    runs = [(label, read_metrics(files)) for label, files in group_runs(paths, root)]
    series, starts = _concatenate(runs)
    output = Path(output) if output is not None else (root if root.is_dir() else root.parent) / "curves.png"
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False, sharex=True)
    plotted = 0
    for ax, (panel, ylabel, names, log_scale) in zip(axes.flat, PANELS):
        shown = [n for n in names if n in series and not (n == "train/loss" and any(m in series for m in names[:-1]))]
        for name in shown:
            steps, values = zip(*series[name])
            sparse = sum(not math.isnan(v) for v in values) < 30
            ax.plot(steps, values, marker="o" if sparse else None, markersize=3, label=name,
                    linestyle="--" if name.startswith("val/") and "loss" in name else "-")
            plotted += 1
        if shown:
            ax.legend(fontsize=8)
            values = [v for n in shown for _, v in series[n] if not math.isnan(v)]
            if log_scale and min(values) > 0 and max(values) / min(values) > 10:  # log only when it spans decades
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        if len(starts) > 1:
            for start, label in starts:
                ax.axvline(start, color="grey", linewidth=0.8, linestyle=":")
                ax.text(start, 1.0, f" {label}", transform=ax.get_xaxis_transform(), fontsize=7, color="grey",
                        va="top", ha="left")
        ax.set_title(panel, fontsize=10)
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("step" if len(starts) == 1 else "step (runs in sequence)")
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
    log.info("wrote %s from %d metrics file(s) of %d run(s)", output, len(paths), len(runs))
    return output
