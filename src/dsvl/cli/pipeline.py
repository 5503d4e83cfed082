"""`dsvl-pipeline`: run the three stages of a recipe family in sequence, each starting from the
previous stage's weights (`init_from=<previous>/checkpoints/last.ckpt`).

    dsvl-pipeline demo
    dsvl-pipeline deepseek_vl_1.3b trainer=ddp logger=wandb
    dsvl-pipeline demo --out outputs/my_pipeline trainer.max_steps=5 sft:optim.lr=1e-4

Overrides apply to every stage; `STAGE:key=value` (STAGE = align, pretrain or sft) to one.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dsvl.cli._config import CONFIG_DIR, compose, guarded

log = logging.getLogger(__name__)

STAGE_ORDER = ("align", "pretrain", "sft")
_STAGE_RE = re.compile(r"^\s*-\s*override\s+/stage:\s*(\w+)", re.MULTILINE)


def family_recipes(family: str) -> list[tuple[str, str]]:
    """[(stage, experiment name)] of a recipe family (a folder of recipes/), in stage order."""
    folder = CONFIG_DIR / "experiment" / family
    if not folder.is_dir():
        known = sorted(p.name for p in (CONFIG_DIR / "experiment").iterdir() if p.is_dir() and p.name != "sweeps")
        raise FileNotFoundError(f"no recipe family {family!r} (known: {', '.join(known)})")
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        match = _STAGE_RE.search(path.read_text())
        if match and match.group(1) in STAGE_ORDER:
            found.setdefault(match.group(1), f"{family}/{path.stem}")
    if not found:
        raise FileNotFoundError(f"recipe family {family!r} has no stage recipes (override /stage: ...)")
    return [(s, found[s]) for s in STAGE_ORDER if s in found]


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Common overrides and per-stage ones (`sft:optim.lr=1e-4`)."""
    common: list[str] = []
    per_stage: dict[str, list[str]] = {s: [] for s in STAGE_ORDER}
    for item in overrides:
        head, sep, rest = item.partition(":")
        if sep and head in STAGE_ORDER and "=" in rest:
            per_stage[head].append(rest)
        else:
            common.append(item)
    return common, per_stage


def run_pipeline(family: str, out_dir: Path, overrides: Sequence[str] = (), stages: Sequence[str] | None = None,
                 init_from: str | None = None, last_overrides: Sequence[str] = ()) -> list:
    """Run the family's stages under `out_dir/<stage>`; returns their `StageResult`s.

    `last_overrides` go to the last stage only (the demo exports from it).
    """
    from dsvl.cli.validate import validate_config
    from dsvl.stages.runner import plan_run, run_stage

    common, per_stage = split_overrides(overrides)
    recipes = [(s, e) for s, e in family_recipes(family) if stages is None or s in stages]
    # compose and check every stage before training any (a typo in stage 3 fails in a second)
    configs = []
    for i, (stage, experiment) in enumerate(recipes):
        extra = list(last_overrides) if i == len(recipes) - 1 else []
        cfg = compose([f"experiment={experiment}", *common, *per_stage[stage], *extra], output_dir=out_dir / stage)
        validate_config(cfg)  # the checks dsvl-train makes (ratios, data paths, guard limits) ...
        plan_run(cfg)  # ... and model fit and batch arithmetic, all before any stage trains
        configs.append((stage, cfg))
    results = []
    previous = init_from
    for stage, cfg in configs:
        if previous:
            cfg.init_from = str(previous)
        plan = plan_run(cfg)
        log.info("pipeline: stage %s (%s), %d steps", stage, cfg.get("task_name"), plan.max_steps)
        result = run_stage(cfg, plan)
        results.append(result)
        previous = result.checkpoint
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `dsvl-pipeline`."""
    from dsvl.stages.runner import close_loggers

    parser = argparse.ArgumentParser(prog="dsvl-pipeline", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", help="recipe family: a folder of recipes/ (demo, deepseek_vl_1.3b, deepseek_vl_7b)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every stage; STAGE:key=value for one")
    parser.add_argument("--out", type=Path, default=None, help="run dir (default outputs/pipeline_<family>/<time>)")
    parser.add_argument("--stages", default=None, help="comma-separated subset, e.g. pretrain,sft")
    parser.add_argument("--init-from", default=None, help="weights for the first stage run")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    out = args.out or Path("outputs") / f"pipeline_{args.family.replace('/', '_')}" / time.strftime("%Y-%m-%d_%H-%M-%S")
    stages = args.stages.split(",") if args.stages else None

    def body() -> int:
        results = run_pipeline(args.family, out, args.overrides, stages=stages, init_from=args.init_from)
        for r in results:
            print(f"{r.stage:<9} steps {r.steps:>6}  {r.seconds:8.1f}s  checkpoint {r.checkpoint}")
        return 0

    return guarded("dsvl-pipeline", body, close_loggers)


if __name__ == "__main__":
    sys.exit(main())
