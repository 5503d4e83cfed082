"""`dsvl-demo` (`make demo`): the whole method on a laptop CPU in a few minutes.

Makes the demo data and its pretrained parts (if missing), runs stages 1-3 of `recipes/demo/`, exports a
transformers-loadable model, evaluates it on held-out data (4-way multiple choice by perplexity, text
perplexity), plots the curves, prints a summary table and writes `summary.json` (the last line of output).

    dsvl-demo --out outputs/demo/mine sft:trainer.max_steps=300
    dsvl-demo --out outputs/demo/mine auto_resume=true   # rerun: finished stages skipped, the interrupted one resumes
    dsvl-demo ablation --steps 300      # stage-2 variants from one stage 1 (dsvl.cli.ablation)
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsvl.cli._config import OneLineParser
from dsvl.cli.demo_setup import ensure_demo_data, quiet_logging
from dsvl.errors import DataError

log = logging.getLogger("dsvl.demo")
CHANCE = 0.25


def first_losses(run_dir: Path, steps: int = 5) -> dict[str, float]:
    """`first/loss_<modality>`: the mean training loss over the first `steps` steps of that modality
    (the start the stage's final loss is compared with)."""
    from dsvl.eval.plots import find_metrics_csv, read_metrics

    series = read_metrics(find_metrics_csv(run_dir))
    points = {m: series.get(f"train/loss_{m}", [])[:steps] for m in ("text", "multimodal")}
    return {f"first/loss_{m}": sum(v for _, v in p) / len(p) for m, p in points.items() if p}


SUMMARY_COLUMNS = (("loss text", "train/loss_text"), ("loss mm", "train/loss_multimodal"), ("mm first", "first/loss_multimodal"),
                   ("text ppl before", "text_ppl_before"), ("after", "text_ppl_after"))


def format_summary(stages: list[dict[str, Any]], evaluation: dict[str, Any]) -> str:
    """The demo's table: per stage steps, seconds and `SUMMARY_COLUMNS` (last and first loss by modality,
    held-out text perplexity before and after the stage: forgetting, or its absence, as a number);
    then held-out metrics."""
    def cell(v: float | None, width: int) -> str:
        return f"{v:>{width}.3f}" if v is not None else f"{'-':>{width}}"

    header = f"{'stage':<9} {'steps':>6} {'seconds':>8}" + "".join(f" {title:>10}" for title, _ in SUMMARY_COLUMNS)
    lines = [header, "-" * len(header)]
    for s in stages:
        lines.append(f"{s['stage']:<9} {s['steps']:>6} {s['seconds']:>8.1f}"
                     + "".join(f" {cell(s['metrics'].get(name), max(10, len(title)))}" for title, name in SUMMARY_COLUMNS))
    mc = evaluation["mc"]
    lines.append("")
    lines.append(f"multiple-choice accuracy (held-out, 4-way, chance {CHANCE}): {mc['accuracy']:.3f} on {mc['num_samples']} questions")
    for name, cat in mc.get("per_category", {}).items():
        lines.append(f"  {name:<8} {cat['accuracy']:.3f} ({cat['num_samples']})")
    lines.append(f"held-out text perplexity: {evaluation['text']['perplexity']:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `dsvl-demo`."""
    parser = OneLineParser(prog="dsvl-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every stage; STAGE:key=value for one")
    parser.add_argument("--out", type=Path, default=None, help="run dir (default outputs/demo/<date>_<time>)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="demo data (made when missing)")
    parser.add_argument("--fresh-data", action="store_true", help="remake the demo data")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ablation"]:
        from dsvl.cli.ablation import main as ablation_main

        return ablation_main(argv[1:])
    args = parser.parse_intermixed_args(argv)
    quiet_logging()

    from dsvl.cli._config import guarded
    from dsvl.cli.train import close_wandb

    out = (args.out or Path("outputs") / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    data_dir = args.data_dir.resolve()

    def body() -> int:
        from transformers import AutoConfig

        from dsvl.cli.ablation import evaluate_checkpoint, stage_text_ppl
        from dsvl.cli.pipeline import run_pipeline
        from dsvl.eval.plots import plot_run

        for flag, folder in (("--out", out), ("--data-dir", data_dir)):
            if folder.exists() and not folder.is_dir():
                raise DataError(f"{flag} {folder} is a file; accepted: a folder (made when missing)")
        start = time.perf_counter()
        data_seconds = ensure_demo_data(data_dir, args.fresh_data)
        export_dir = out / "export"
        common = [f"paths.data_dir={data_dir}"]
        if not args.progress:
            common.append("++trainer.enable_progress_bar=false")
        results = run_pipeline("demo", out, [*common, *args.overrides], last_overrides=[f"export_dir={export_dir}"])
        # the export loaded as users would (transformers, then dsvl) and scored on held-out test data
        model_type = AutoConfig.from_pretrained(str(export_dir)).model_type
        evaluation = {"model_type": model_type, **evaluate_checkpoint(export_dir, data_dir)}
        plots = {}
        for r in results:
            try:
                plots[r.stage] = str(plot_run(r.output_dir, out / f"curves_{r.stage}.png", title=f"demo {r.stage}"))
            except (FileNotFoundError, ValueError) as err:
                log.warning("no plot for %s: %s", r.stage, err)
        ppl = stage_text_ppl(results, data_dir)
        stages = [{"stage": r.stage, "steps": int(r.metrics["trainer/global_step"]),
                   "seconds": round(r.metrics["perf/fit_seconds"], 2),
                   "metrics": {**r.metrics, "text_ppl_before": before, "text_ppl_after": after,
                               **first_losses(r.output_dir)},
                   "final_loss": {m: r.metrics[f"train/loss_{m}"] for m in ("text", "multimodal") if f"train/loss_{m}" in r.metrics},
                   "text_ppl_before": before, "text_ppl_after": after,
                   "checkpoint": str(r.checkpoint), "run_dir": str(r.output_dir),
                   "val": {k: v for k, v in r.metrics.items() if k.startswith("val/")}} for r, (before, after) in zip(results, ppl)]
        summary = {
            "mc_accuracy": evaluation["mc"]["accuracy"],
            "mc_num_samples": evaluation["mc"]["num_samples"],
            "mc_per_category": evaluation["mc"].get("per_category", {}),
            "text_ppl": evaluation["text"]["perplexity"],
            "stages": {s["stage"]: s for s in stages},
            "export_dir": str(export_dir),
            "export_model_type": evaluation["model_type"],
            "plots": plots,
            "data_dir": str(data_dir),
            "data_seconds": round(data_seconds, 2),
            "total_seconds": round(time.perf_counter() - start, 2),
        }
        print()
        print(format_summary(stages, evaluation))
        print(f"exported model: {export_dir} (transformers model_type {evaluation['model_type']})")
        if "pretrain" in plots:
            print(f"loss curves: {plots['pretrain']}")
        print(f"total: {summary['total_seconds']:.0f}s")
        path = out / "summary.json"
        path.write_text(json.dumps(summary, indent=2))
        print(path)
        return 0

    return guarded("dsvl-demo", body, close_wandb)


if __name__ == "__main__":
    sys.exit(main())
