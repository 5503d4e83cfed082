"""`dsvl-demo ablation` (`make ablation`): the paper's stage-2 findings (modality grouping,
modality warm-up, language share) in miniature on the demo, from one set of stage-1 weights.

Trains demo stage 1 once, then each variant of `dsvl.demo.ablation.VARIANTS` for the same number
of samples, evaluates each on held-out test data (text perplexity, multimodal loss, 4-way MC
accuracy), writes `ablation.json` and `ablation.png`; the json's path is the last line of output.

    dsvl-demo ablation
    dsvl-demo ablation --out outputs/ablation/mine --steps 200
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("dsvl.demo")


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
    """`evaluate_model` of a stage's checkpoint (rebuilt from its saved hyperparameters, as dsvl-eval does)."""
    from dsvl.cli.evaluate import load_for_inference

    loaded = load_for_inference(checkpoint, device="cpu")
    return evaluate_model(loaded.model, loaded.tokenizer, data_dir, system_prompt=loaded.system_prompt, mc=mc, limit=limit)


def pretrained_text_ppl(run_dir: Path, data_dir: Path, limit: int | None = None) -> float:
    """Held-out text perplexity of the model a run started from before training: the pretrained
    parts it loads (its `config_resolved.yaml` model), the adaptor untouched by text."""
    from omegaconf import OmegaConf

    from dsvl.data import load_tokenizer
    from dsvl.model import build_model

    model = build_model(OmegaConf.load(run_dir / "config_resolved.yaml").model).eval()
    tokenizer = load_tokenizer(str(data_dir / "tokenizer"))
    return evaluate_model(model, tokenizer, data_dir, mc=False, limit=limit)["text"]["perplexity"]


def stage_text_ppl(results: Sequence[Any], data_dir: Path) -> list[tuple[float, float]]:
    """(before, after) held-out text perplexity per stage: before stage 1 the pretrained parts,
    before every later stage the previous stage's result."""
    before = pretrained_text_ppl(results[0].output_dir, data_dir)
    rows = []
    for result in results:
        after = evaluate_checkpoint(result.checkpoint, data_dir, mc=False)["text"]["perplexity"]
        rows.append((before, after))
        before = after
    return rows


def run_ablation(out: Path, data_dir: Path, overrides: Sequence[str], steps: int, val_every: int,
                 variants: dict[str, list[str]] | None = None, stage1_overrides: Sequence[str] = (),
                 eval_limit: int | None = None) -> dict[str, Any]:
    """Stage 1 once, then every variant from its weights; returns the ablation report.

    `overrides` go to every run, `stage1_overrides` to stage 1 only; `eval_limit` caps the
    held-out samples each evaluation reads (None: all)."""
    from omegaconf import OmegaConf

    from dsvl.demo.ablation import VARIANTS, plot_ablation, variant_record, write_report

    variants = VARIANTS if variants is None else variants
    start = time.perf_counter()
    common = [f"paths.data_dir={data_dir}", *overrides]
    align = train_stage("demo/align", out / "align", [*common, *stage1_overrides])
    reference = pretrained_text_ppl(align.output_dir, data_dir, eval_limit)
    report: dict[str, Any] = {"steps": steps, "reference_text_ppl": reference, "stage1_checkpoint": str(align.checkpoint),
                              "variants": {}}
    for name, extra in variants.items():
        log.info("ablation: variant %s (%s)", name, " ".join(extra) or "the recipe")
        stage_overrides = [*common, f"trainer.max_steps={steps}", f"val_every_n_steps={val_every}", *extra]
        result = train_stage("demo/pretrain", out / name, stage_overrides, init_from=align.checkpoint)
        evaluation = evaluate_checkpoint(result.checkpoint, data_dir, limit=eval_limit)
        global_batch = int(OmegaConf.load(result.output_dir / "config_resolved.yaml").stage.global_batch)
        report["variants"][name] = variant_record(steps=int(result.metrics["trainer/global_step"]), global_batch=global_batch,
                                                  seconds=result.metrics["perf/fit_seconds"],
                                                  text=evaluation["text"], mc=evaluation["mc"], run_dir=result.output_dir,
                                                  checkpoint=result.checkpoint, overrides=extra)
    report["plot"] = str(plot_ablation(report["variants"], out / "ablation.png", reference_ppl=reference))
    report["seconds"] = round(time.perf_counter() - start, 2)
    write_report(report, out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """`dsvl-demo ablation ...`."""
    from dsvl.cli._config import guarded
    from dsvl.cli.demo_setup import ensure_demo_data, quiet_logging
    from dsvl.demo.ablation import format_ablation
    from dsvl.cli.train import close_wandb

    parser = argparse.ArgumentParser(prog="dsvl-demo ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for stage 1 and every variant")
    parser.add_argument("--out", type=Path, default=None, help="run dir (default outputs/ablation/<date>_<time>)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="demo data (made when missing)")
    parser.add_argument("--steps", type=int, default=300, help="global steps per variant (same for all)")
    parser.add_argument("--val-every", type=int, default=50, help="validation (curves) every N steps")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    args = parser.parse_intermixed_args(argv)
    if args.steps <= 0 or args.val_every <= 0:
        parser.error("--steps and --val-every must be positive")
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
