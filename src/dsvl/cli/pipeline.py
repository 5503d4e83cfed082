"""`dsvl-pipeline`: run the stage recipes of a family in sequence, each starting from the previous
stage's weights (`init_from=<previous>/checkpoints/last.ckpt`), each through `train(cfg)`.

    dsvl-pipeline demo
    dsvl-pipeline deepseek_vl_1.3b trainer=ddp logger=wandb
    dsvl-pipeline demo --out outputs/my_pipeline trainer.max_steps=5 sft:optim.lr=1e-4
    dsvl-pipeline demo --out outputs/my_pipeline auto_resume=true   # rerun: skip finished stages, resume the rest

Overrides apply to every stage; `STAGE:key=value` (STAGE = a stage's name, e.g. sft) to one. A family
is a folder of `conf/experiment/`; its recipes run in file-name order.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dsvl.cli._config import CONFIG_DIR, OneLineParser, compose, guarded
from dsvl.errors import ConfigError

log = logging.getLogger(__name__)

RESULT_FILE = "stage_metrics.json"


@dataclass
class StageRun:
    """One finished stage: its name, run dir, checkpoint and the metrics `train(cfg)` returned."""

    stage: str
    output_dir: Path
    checkpoint: Path
    metrics: dict[str, float] = field(default_factory=dict)


def family_recipes(family: str) -> list[str]:
    """The experiment names of a recipe family (a folder of conf/experiment/), in file-name order."""
    folder = CONFIG_DIR / "experiment" / family
    recipes = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not recipes:
        known = sorted(p.name for p in (CONFIG_DIR / "experiment").iterdir() if p.is_dir() and p.name != "sweeps")
        raise ConfigError(f"no recipe family {family!r} (known: {', '.join(known)})")
    return [f"{family}/{p.stem}" for p in recipes]


def compose_stages(family: str, out_dir: Path, overrides: Sequence[str], stages: Sequence[str] | None,
                   last_overrides: Sequence[str]) -> list[tuple[str, object]]:
    """[(stage name, composed config)] of the family, `STAGE:key=value` overrides applied to their stage,
    each checked before any stage trains (a typo in stage 3 fails in a second)."""
    from hydra.utils import get_class

    from dsvl.cli.train import check_run
    from dsvl.cli.validate import validate_config

    common = [o for o in overrides if ":" not in o.split("=", 1)[0]]
    scoped = [o.split(":", 1) for o in overrides if ":" in o.split("=", 1)[0]]
    if not any(o.startswith("run_group=") for o in common):  # one W&B group per pipeline
        common.append(f"run_group=pipeline_{family.replace('/', '_')}_{out_dir.name}")
    composed = [(experiment, compose([f"experiment={experiment}", *common], output_dir=out_dir / "_"))
                for experiment in family_recipes(family)]
    names = [get_class(cfg.stage._target_).stage_name for _, cfg in composed]
    unknown = sorted({s for s, _ in scoped if s not in names} | set(stages or []) - set(names))
    if unknown:
        raise ConfigError(f"unknown stage {', '.join(unknown)} for family {family} (its stages: {', '.join(names)})")
    chosen = [(s, e) for s, (e, _) in zip(names, composed) if stages is None or s in stages]
    configs = []
    for i, (stage, experiment) in enumerate(chosen):
        extra = list(last_overrides) if i == len(chosen) - 1 else []
        cfg = compose([f"experiment={experiment}", *common, *[o for s, o in scoped if s == stage], *extra],
                      output_dir=out_dir / stage)
        validate_config(cfg)
        check_run(cfg)
        configs.append((stage, cfg))
    return configs


def run_pipeline(family: str, out_dir: Path, overrides: Sequence[str] = (), stages: Sequence[str] | None = None,
                 init_from: str | None = None, last_overrides: Sequence[str] = ()) -> list[StageRun]:
    """Train the family's stages under `out_dir/<stage>` with `train(cfg)`; returns one `StageRun` each. With
    `auto_resume=true` a finished stage (its `stage_metrics.json` exists) is skipped and an interrupted one resumes
    from its last.ckpt. `last_overrides` go to the last stage only (the demo exports from it)."""
    from dsvl.cli.train import ckpt_dir, train

    runs: list[StageRun] = []
    previous = init_from
    for stage, cfg in compose_stages(family, out_dir, overrides, stages, last_overrides):
        result = Path(cfg.paths.output_dir) / RESULT_FILE
        if cfg.get("auto_resume") and result.is_file():
            log.info("pipeline: stage %s finished before (%s), skipped", stage, result)
            metrics = json.loads(result.read_text())
        else:
            if previous:
                cfg.init_from = str(previous)
            log.info("pipeline: stage %s (%s), %d steps", stage, cfg.get("task_name"), cfg.trainer.max_steps)
            metrics = train(cfg)
            result.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        runs.append(StageRun(stage, Path(cfg.paths.output_dir), ckpt_dir(cfg) / "last.ckpt", metrics))
        previous = runs[-1].checkpoint
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `dsvl-pipeline`."""
    from dsvl.cli.train import close_wandb

    parser = OneLineParser(prog="dsvl-pipeline", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", help="recipe family: a folder of conf/experiment/ (demo, deepseek_vl_1.3b, deepseek_vl_7b)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every stage; STAGE:key=value for one")
    parser.add_argument("--out", type=Path, default=None, help="run dir (default outputs/pipeline_<family>/<time>)")
    parser.add_argument("--stages", default=None, help="comma-separated subset, e.g. pretrain,sft")
    parser.add_argument("--init-from", default=None, help="weights for the first stage run")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    out = args.out or Path("outputs") / f"pipeline_{args.family.replace('/', '_')}" / time.strftime("%Y-%m-%d_%H-%M-%S")
    stages = args.stages.split(",") if args.stages else None

    def body() -> int:
        for r in run_pipeline(args.family, out, args.overrides, stages=stages, init_from=args.init_from):
            print(f"{r.stage:<9} steps {r.metrics['trainer/global_step']:>6.0f}  {r.metrics['perf/fit_seconds']:8.1f}s  "
                  f"checkpoint {r.checkpoint}")
        return 0

    return guarded("dsvl-pipeline", body, close_wandb)


if __name__ == "__main__":
    sys.exit(main())
