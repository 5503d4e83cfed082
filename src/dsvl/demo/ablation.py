"""DeepSeek-VL's stage-2 findings in miniature: the variants, what each records, the plot.

Every variant is the demo's stage-2 recipe started from the same stage-1 weights and trained for
the same number of global steps of the same global batch (the same number of samples), changing
one thing the paper studied:

    grouped    the recipe: each global step all text or all multimodal, language share 1.0 -> 0.7
    mixed      both modalities inside every micro-batch (paper: same quality, slower)
    no_warmup  language share 0.7 from the first step (paper: early language drop, worse at the end)
    no_text    language share 0: multimodal data only (paper: the LLM forgets language)

`dsvl.cli.ablation` trains them; this module only defines them and reads their runs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dsvl.demo.runs import curves, last_value

log = logging.getLogger(__name__)

# name -> Hydra overrides of the demo's stage-2 recipe (recipes/demo/pretrain.yaml)
VARIANTS: dict[str, list[str]] = {
    "grouped": [],
    "mixed": ["data.mode=mixed"],
    "no_warmup": ["data.schedule.start=0.7"],
    "no_text": ["data.schedule.start=0.0", "data.schedule.target=0.0"],
}


def variant_record(*, steps: int, global_batch: int, seconds: float, text: dict[str, Any], mc: dict[str, Any],
                   run_dir: str | Path, checkpoint: str | Path, overrides: list[str]) -> dict[str, Any]:
    """One variant's entry of ablation.json: held-out (test split) results, cost and curves.

    `seconds` is the stage's fit time (validation every few steps included, the same schedule for
    every variant); `samples_per_s` = steps x global batch / seconds.
    """
    samples = steps * global_batch
    return {
        "text_ppl": text["perplexity"],
        "mm_loss": text.get("multimodal", {}).get("loss"),
        "mc_accuracy": mc["accuracy"],
        "mc_per_category": {k: v["accuracy"] for k, v in mc.get("per_category", {}).items()},
        "steps": steps,
        "samples": samples,
        "seconds": round(seconds, 2),
        "samples_per_s": round(samples / seconds, 3) if seconds > 0 else None,
        "text_share": last_value(run_dir, "train/text_share"),  # realised share of text steps
        "overrides": overrides,
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "curves": curves(run_dir),
    }


def plot_ablation(variants: dict[str, dict[str, Any]], output: str | Path, reference_ppl: float | None = None) -> Path:
    """One PNG: held-out text perplexity (left) and MC accuracy (right) over steps, a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (key, title), ax in zip((("text_ppl", "held-out text perplexity (val)"), ("mc_accuracy", "MC accuracy (val)")), axes):
        for name, record in variants.items():
            points = record["curves"].get(key, [])
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=name)
        if key == "text_ppl":
            ax.set_yscale("log")  # forgetting without text is orders of magnitude; the rest differ by percent
            if reference_ppl is not None:
                ax.axhline(reference_ppl, color="grey", linestyle="--", linewidth=1, label="pretrained LLM")
        if key == "mc_accuracy":
            ax.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_title(title)
        ax.set_xlabel("global step")
        ax.legend(fontsize=8)
    fig.suptitle("demo stage-2 ablation (same stage-1 weights, same samples)")
    fig.tight_layout()
    out = Path(output)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def format_ablation(report: dict[str, Any]) -> str:
    """The ablation's table: one row per variant."""
    header = f"{'variant':<10} {'text ppl':>9} {'MC acc':>7} {'mm loss':>8} {'samples/s':>10} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for name, v in report["variants"].items():
        mm = f"{v['mm_loss']:.3f}" if v.get("mm_loss") is not None else "-"
        lines.append(f"{name:<10} {v['text_ppl']:>9.3f} {v['mc_accuracy']:>7.3f} {mm:>8} {v['samples_per_s']:>10.2f} {v['seconds']:>8.1f}")
    if report.get("reference_text_ppl") is not None:
        lines.append(f"pretrained LLM (before stage 1) held-out text perplexity: {report['reference_text_ppl']:.3f}")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / "ablation.json"
    path.write_text(json.dumps(report, indent=2))
    return path
