"""What the demo reads back from a stage's run dir (Lightning's CSV `metrics.csv`)."""
from __future__ import annotations

from pathlib import Path

from dsvl.eval.plots import find_metrics_csv, read_metrics

CURVES = {"text_ppl": "val/text_ppl", "mc_accuracy": "val/mc_acc"}
FIRST_STEPS = 5


def curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Validation text perplexity and MC accuracy over global steps."""
    series = read_metrics(find_metrics_csv(run_dir))
    return {name: [(int(step), value) for step, value in series.get(metric, [])] for name, metric in CURVES.items()}


def first_losses(run_dir: str | Path, steps: int = FIRST_STEPS) -> dict[str, float]:
    """Mean training loss by modality over the first `steps` steps of that modality (the start
    the stage's final loss is compared with)."""
    series = read_metrics(find_metrics_csv(run_dir))
    out = {}
    for modality in ("text", "multimodal"):
        points = series.get(f"train/loss_{modality}", [])[:steps]
        if points:
            out[modality] = sum(v for _, v in points) / len(points)
    return out


def last_value(run_dir: str | Path, metric: str) -> float | None:
    """The metric's value at the last step it was logged (None when never)."""
    points = read_metrics(find_metrics_csv(run_dir)).get(metric, [])
    return points[-1][1] if points else None
