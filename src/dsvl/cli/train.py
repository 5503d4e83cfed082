"""`dsvl-train`: the Hydra entry point for one training stage.

    dsvl-train experiment=demo/align
    dsvl-train experiment=deepseek_vl_1.3b/stage2_pretrain trainer=ddp logger=wandb
    dsvl-train experiment=demo/pretrain init_from=outputs/demo_align/.../checkpoints/last.ckpt
    dsvl-train -m experiment=demo/align optim.lr=1e-3,3e-3
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dsvl.cli._config import CONFIG_DIR, guarded


def run_task(cfg: DictConfig) -> float:
    """Check, train, return the sweep objective (`optimized_metric`, nan when absent)."""
    from dsvl.cli.validate import validate_config
    from dsvl.stages.resume import resolve_ckpt_path
    from dsvl.stages.runner import close_loggers, plan_run, run_stage, value_of

    def body() -> float:
        validate_config(cfg)  # value checks Hydra cannot do (ratios, data paths)
        cfg.ckpt_path = resolve_ckpt_path(cfg)  # ckpt_path=last / auto_resume; refuses unsafe checkpoints
        plan = plan_run(cfg)  # before any weights: a bad config costs a second
        result = run_stage(cfg, plan)
        return value_of(result.metrics, cfg.get("optimized_metric"))

    return guarded("dsvl-train", body, close_loggers)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    """The Hydra app (composition, run dir, multirun) around `run_task`."""
    return run_task(cfg)


def main() -> None:
    """Console script `dsvl-train`: a config Hydra cannot compose is one line and exit 2, then Hydra runs."""
    import sys

    from dsvl.cli._config import fail
    from dsvl.cli.validate import precheck_overrides

    error = precheck_overrides(sys.argv[1:])
    if error:
        fail("dsvl-train", error)
    hydra_main()


if __name__ == "__main__":
    main()
