"""The trainer configs (conf/trainer) compose and build their Lightning strategies without a GPU;
the 1.3B and 7B recipes compose with every GPU strategy and pass the run checks; SLURM runs get
Lightning's auto-requeue on the signal the submitit launcher asks sbatch for."""
from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from dsvl.cli._config import CONFIG_DIR, compose

GPU_TRAINERS = ("gpu", "ddp", "fsdp", "deepspeed", "deepspeed_zero3", "slurm")
RECIPES = sorted(f"{p.parent.name}/{p.stem}" for p in (CONFIG_DIR / "experiment").glob("deepseek_vl_*/*.yaml"))
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def test_every_trainer_config_is_tested():
    names = {p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml")}
    assert names == {"default", "cpu", *GPU_TRAINERS}


@pytest.mark.parametrize("name", GPU_TRAINERS)
def test_gpu_trainers_are_bf16_mixed_on_gpus(name):
    t = compose([f"trainer={name}"]).trainer
    assert t.accelerator == "gpu" and t.precision == "bf16-mixed"
    assert t.devices in (-1, 1, 8)


def test_ddp_builds_and_tolerates_the_unused_vision_path_of_text_steps():
    from lightning.pytorch.strategies import DDPStrategy

    strategy = instantiate(compose(["trainer=ddp"]).trainer.strategy)
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs["find_unused_parameters"] is True


def test_fsdp_is_fsdp2_through_model_parallel_strategy_with_options():
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch import bfloat16

    from dsvl.stages.strategies import FSDP2Strategy

    cfg = compose(["trainer=fsdp", "trainer.strategy.param_dtype=bf16", "trainer.strategy.reshard_after_forward=false"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDP2Strategy) and isinstance(strategy, ModelParallelStrategy)
    assert strategy.param_dtype is bfloat16 and not strategy.reshard_after_forward
    with pytest.raises(ValueError, match="dtype"):
        FSDP2Strategy(param_dtype="bf17")


@pytest.mark.parametrize("name,stage", [("deepspeed", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_configs_compose_without_deepspeed(name, stage):
    s = compose([f"trainer={name}"]).trainer.strategy
    assert s.stage == stage
    get_class(s._target_)  # Lightning's DeepSpeedStrategy imports without the deepspeed package


def test_deepspeed_without_the_package_or_on_cpu_is_one_line_before_weights(monkeypatch):
    from dsvl.errors import ConfigError
    from dsvl.stages.strategies import check_strategy

    cfg = compose(["experiment=deepseek_vl_7b/stage2_pretrain", "trainer=deepspeed_zero3"]).trainer
    with pytest.raises(ConfigError, match="GPUs only; on CPU use trainer=ddp or trainer=fsdp") as cpu:
        check_strategy(compose(["experiment=deepseek_vl_7b/stage2_pretrain", "trainer=deepspeed_zero3",
                                "trainer.accelerator=cpu"]).trainer)
    assert "\n" not in str(cpu.value)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else find_spec(name, *a))
    with pytest.raises(ConfigError, match="pip install deepspeed"):
        check_strategy(cfg)


def test_paper_recipes_exist():
    assert {r.split("/")[0] for r in RECIPES} == {"deepseek_vl_1.3b", "deepseek_vl_7b"} and len(RECIPES) >= 6


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("trainer", ["ddp", "fsdp", "deepspeed", "deepspeed_zero3", "slurm"])
def test_paper_recipes_compose_with_gpu_strategies(recipe, trainer):
    from dsvl.cli.models import vision_spec
    from dsvl.cli.train import accumulation, check_run
    from dsvl.errors import ConfigError
    from dsvl.stages.strategies import check_strategy

    cfg = compose([f"experiment={recipe}", f"trainer={trainer}", "trainer.devices=8", "trainer.num_nodes=4"])
    size = "7b" if "7b" in recipe else "1.3b"
    assert cfg.model.llm.hidden_size == (4096 if size == "7b" else 2048)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert OmegaConf.select(cfg, "trainer.strategy._target_")
    assert vision_spec(cfg.model).num_image_tokens == 576
    if trainer.startswith("deepspeed") and not HAS_DEEPSPEED:
        with pytest.raises(ConfigError, match="deepspeed"):
            check_strategy(cfg.trainer)
        return
    check_strategy(cfg.trainer)
    check_run(cfg)  # no weights: parts fit, trainable names, schedules
    assert accumulation(cfg, 32) * cfg.data.micro_batch_size * 32 == cfg.stage.global_batch
    if trainer in ("fsdp", "slurm"):
        strategy = instantiate(cfg.trainer.strategy)
        assert type(strategy).__name__ == "FSDP2Strategy"
    if trainer.startswith("deepspeed"):  # ZeRO-3 builds on meta and partitions unit by unit; ZeRO-2 builds whole
        from dsvl.stages.strategies import builds_on_meta

        assert builds_on_meta(instantiate(cfg.trainer.strategy)) is (trainer == "deepspeed_zero3")


SLURM_ENV = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "dsvl", "SLURM_JOB_ID": "42",
             "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "node1"}


def test_slurm_trainer_requeues_on_the_launchers_signal(monkeypatch, tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from lightning.fabric.plugins.environments import SLURMEnvironment

    for k, v in SLURM_ENV.items():
        monkeypatch.setenv(k, v)
    cfg = compose(["trainer=slurm", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=1",
                   "trainer.precision=32-true", f"paths.output_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, _convert_="all")
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal == signal.SIGUSR1
    assert Path(trainer.default_root_dir) == tmp_path  # where hpc_ckpt_<n>.ckpt is written and found on requeue

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        full = hydra_compose("train", overrides=["trainer=slurm", "trainer.num_nodes=4", "hydra/launcher=submitit_slurm"],
                             return_hydra_config=True)
    launcher = OmegaConf.to_container(full.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["nodes"] == 4 and launcher["tasks_per_node"] == launcher["gpus_per_node"] == 8
    sig, _, seconds = launcher["additional_parameters"]["signal"].partition("@")
    assert "SIG" + sig == cfg.trainer.plugins[0].requeue_signal and int(seconds) > 0
    assert launcher["max_num_timeout"] == 0  # submitit does not requeue too


def test_slurm_environment_rejects_unknown_signal():
    from dsvl.stages.strategies import slurm_environment

    assert slurm_environment(requeue_signal="SIGUSR2").requeue_signal == signal.SIGUSR2
    with pytest.raises(KeyError):
        slurm_environment(requeue_signal="SIGNOPE")
