"""Adding a stage is a class, a `conf/stage/` file and a recipe: written here into a config dir of the
test's own (Hydra's searchpath), then trained a step through `train(cfg)` and run by `dsvl-pipeline`."""
from __future__ import annotations

from pathlib import Path

from train_fixtures import FAST


def test_a_new_stage_trains_from_its_own_conf_and_recipe(demo_data: Path, tmp_path: Path) -> None:
    from dsvl.cli._config import compose
    from dsvl.cli.train import train
    from dsvl.cli.models import load_stage_checkpoint

    conf = tmp_path / "conf"
    (conf / "stage").mkdir(parents=True)
    (conf / "experiment" / "mine").mkdir(parents=True)
    (conf / "stage" / "caption.yaml").write_text("_target_: train_fixtures.CaptionStage\ntrainable: null\nglobal_batch: 8\n")
    (conf / "experiment" / "mine" / "caption.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: demo_align\n  - override /stage: caption\n"
        "  - override /trainer: cpu\ntask_name: mine_caption\noptim:\n  lr: 1.0e-3\n")
    cfg = compose([f"hydra.searchpath=[file://{conf}]", "experiment=mine/caption", f"paths.data_dir={demo_data}", *FAST,
                   "trainer.max_steps=1"], output_dir=tmp_path / "run")
    metrics = train(cfg)
    assert metrics["trainer/global_step"] == 1
    loaded = load_stage_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert loaded.hparams["stage_name"] == "caption" and loaded.hparams["trainable"] is None
    log = (tmp_path / "run" / "csv" / "hparams.yaml").read_text()
    assert "CaptionStage" in log  # the run's resolved config names the new stage
