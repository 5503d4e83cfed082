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
    from dsvl.stages.runner import close_loggers, plan_run, run_stage, value_of

    def body() -> float:
        plan = plan_run(cfg)  # before any weights: a bad config costs a second
        result = run_stage(cfg, plan)
        return value_of(result.metrics, cfg.get("optimized_metric"))

    return guarded("dsvl-train", body, close_loggers)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Console script `dsvl-train`."""
    return run_task(cfg)


if __name__ == "__main__":
    main()
