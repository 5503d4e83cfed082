"""`dsvl-demo ablation` (`make ablation`): DeepSeek-VL's stage-2 findings in miniature on the demo.

Trains demo stage 1 once, then each of `VARIANTS` from its weights for the same samples, evaluates
each on held-out test data and writes `ablation.json` (its path is the last line of output) and
`ablation.png`; the variants and what the paper says of each are in docs/demo.md.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsvl.eval.plots import find_metrics_csv, read_metrics

log = logging.getLogger("dsvl.demo")

# name -> Hydra overrides of the demo's stage-2 recipe (recipes/demo/pretrain.yaml)
VARIANTS: dict[str, list[str]] = {
    "grouped": [],
    "mixed": ["data.mode=mixed"],
    "no_warmup": ["data.schedule.start=0.7"],
    "no_text": ["data.schedule.start=0.0", "data.schedule.target=0.0"],
}
CURVES = {"text_ppl": "val/text_ppl", "mc_accuracy": "val/mc_acc"}


def train_stage(experiment: str, out_dir: Path, overrides: Sequence[str] = (), init_from: Path | None = None) -> Any:
    """The demo's one call into the run path: compose a recipe and `train(cfg)` it (checks included)."""
    from dsvl.cli._config import compose
    from dsvl.cli.pipeline import StageRun
    from dsvl.cli.train import train

    init = [f"init_from={init_from}"] if init_from else []
    cfg = compose([f"experiment={experiment}", *overrides, *init], output_dir=out_dir)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    return StageRun(experiment.rpartition("/")[2], out, out / "checkpoints" / "last.ckpt", metrics)


def evaluate_model(model: Any, tokenizer: Any, data_dir: Path, system_prompt: str | None = None,
                   mc: bool = True, limit: int | None = None) -> dict[str, Any]:
    """Held-out test metrics of a demo model: text perplexity and caption loss, MC accuracy
    (`limit`: at most that many text samples and questions)."""
    from dsvl.eval.evaluate import evaluate_mc, evaluate_text

    text = evaluate_text(model, tokenizer, [str(data_dir / "pretrain" / "text" / "test"),
                                            str(data_dir / "pretrain" / "caption" / "test")], batch_size=32, limit=limit)
    out: dict[str, Any] = {"text": text}
    if mc:
        out["mc"] = evaluate_mc(model, tokenizer, str(data_dir / "mc" / "test"), mode="text", batch_size=16,
                                system_prompt=system_prompt, limit=limit)
    return out


def evaluate_checkpoint(checkpoint: Path, data_dir: Path, mc: bool = True, limit: int | None = None) -> dict[str, Any]:
    """`evaluate_model` of a stage's checkpoint or an export, loaded as dsvl-eval loads it; MC in the
    model's own system prompt (the one its SFT data was rendered with)."""
    from dsvl.cli.evaluate import load_for_inference

    loaded = load_for_inference(checkpoint, device="cpu")
    return evaluate_model(loaded.model, loaded.tokenizer, data_dir, system_prompt=loaded.system_prompt, mc=mc, limit=limit)


def pretrained_text_ppl(run_dir: Path, data_dir: Path, limit: int | None = None) -> float:
    """Held-out text perplexity of the model a run started from before training: the pretrained
    parts it loads (its `config_resolved.yaml` model), the adaptor untouched by text."""
    from omegaconf import OmegaConf

    from dsvl.data import load_tokenizer
    from dsvl.cli.models import build_model

    model = build_model(OmegaConf.load(run_dir / "config_resolved.yaml").model).eval()
    tokenizer = load_tokenizer(str(data_dir / "tokenizer"))
    return evaluate_model(model, tokenizer, data_dir, mc=False, limit=limit)["text"]["perplexity"]


def stage_text_ppl(results: Sequence[Any], data_dir: Path) -> list[tuple[float, float]]:
    """(before, after) held-out text perplexity per stage: before stage 1 the pretrained parts,
    before every later stage the previous stage's result."""
    ppl = [pretrained_text_ppl(results[0].output_dir, data_dir)]
    ppl += [evaluate_checkpoint(r.checkpoint, data_dir, mc=False)["text"]["perplexity"] for r in results]
    return list(zip(ppl, ppl[1:]))


def run_ablation(out: Path, data_dir: Path, overrides: Sequence[str], steps: int, val_every: int,
                 stage1_overrides: Sequence[str] = (), eval_limit: int | None = None) -> dict[str, Any]:
    """Stage 1 once, then every variant from its weights; returns the ablation report.

    `overrides` go to every run, `stage1_overrides` to stage 1 only; `eval_limit` caps the
    held-out samples each evaluation reads (None: all)."""
    from omegaconf import OmegaConf

    start = time.perf_counter()
    common = [f"paths.data_dir={data_dir}", *overrides]
    align = train_stage("demo/align", out / "align", [*common, *stage1_overrides])
    reference = pretrained_text_ppl(align.output_dir, data_dir, eval_limit)
    report: dict[str, Any] = {"steps": steps, "reference_text_ppl": reference, "stage1_checkpoint": str(align.checkpoint),
                              "variants": {}}
    for name, extra in VARIANTS.items():
        log.info("ablation: variant %s (%s)", name, " ".join(extra) or "the recipe")
        stage_overrides = [*common, f"trainer.max_steps={steps}", f"val_every_n_steps={val_every}", *extra]
        result = train_stage("demo/pretrain", out / name, stage_overrides, init_from=align.checkpoint)
        evaluation = evaluate_checkpoint(result.checkpoint, data_dir, limit=eval_limit)
        text, mc = evaluation["text"], evaluation["mc"]
        # `seconds`: the stage's fit time, validation every few steps included (the same for every variant)
        done, seconds = int(result.metrics["trainer/global_step"]), result.metrics["perf/fit_seconds"]
        samples = done * int(OmegaConf.load(result.output_dir / "config_resolved.yaml").stage.global_batch)
        series = read_metrics(find_metrics_csv(result.output_dir))
        report["variants"][name] = {
            "text_ppl": text["perplexity"],
            "mm_loss": text.get("multimodal", {}).get("loss"),
            "mc_accuracy": mc["accuracy"],
            "mc_per_category": {k: v["accuracy"] for k, v in mc.get("per_category", {}).items()},
            "steps": done,
            "samples": samples,
            "seconds": round(seconds, 2),
            "samples_per_s": round(samples / seconds, 3) if seconds > 0 else None,
            "text_share": series["train/text_share"][-1][1] if series.get("train/text_share") else None,  # realised
            "overrides": extra,
            "run_dir": str(result.output_dir),
            "checkpoint": str(result.checkpoint),
            "curves": {key: [(int(step), v) for step, v in series.get(metric, [])] for key, metric in CURVES.items()},
        }
    report["plot"] = str(plot_ablation(report["variants"], out / "ablation.png", reference))
    report["seconds"] = round(time.perf_counter() - start, 2)
    (out / "ablation.json").write_text(json.dumps(report, indent=2))
    return report


def plot_ablation(variants: dict[str, dict[str, Any]], output: str | Path, reference_ppl: float) -> Path:
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
    lines.append(f"pretrained LLM (before stage 1) held-out text perplexity: {report['reference_text_ppl']:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`dsvl-demo ablation ...`."""
    from dsvl.cli._config import guarded
    from dsvl.cli._config import OneLineParser, positive_int
    from dsvl.cli.demo_setup import ensure_demo_data, quiet_logging
    from dsvl.cli.train import close_wandb

    parser = OneLineParser(prog="dsvl-demo ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for stage 1 and every variant")
    parser.add_argument("--out", type=Path, default=None, help="run dir (default outputs/ablation/<date>_<time>)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="demo data (made when missing)")
    parser.add_argument("--steps", type=positive_int, default=300, help="global steps per variant (same for all)")
    parser.add_argument("--val-every", type=positive_int, default=50, help="validation (curves) every N steps")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    args = parser.parse_intermixed_args(argv)
    quiet_logging()
    out = (args.out or Path("outputs") / "ablation" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    data_dir = args.data_dir.resolve()

    def body() -> int:
        ensure_demo_data(data_dir)
        overrides = list(args.overrides) + ([] if args.progress else ["++trainer.enable_progress_bar=false"])
        report = run_ablation(out, data_dir, overrides, args.steps, args.val_every)
        print()
        print(format_ablation(report))
        print(f"plot: {report['plot']}")
        print(f"total: {report['seconds']:.0f}s")
        print(out / "ablation.json")
        return 0

    return guarded("dsvl-demo ablation", body, close_wandb)
