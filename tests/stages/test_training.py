"""Stage runs on the tiny model and small demo data: accumulation from the global batch, one
modality per global step, loss masks per stage, logged metric names, init_from and resume."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from dsvl.stages.runner import TrainConfigError, build_datamodule, plan_run, run_stage

IMAGE_TOKEN = "<image_placeholder>"


def _metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "csv" / "metrics.csv").open()))


def test_accumulation_is_global_batch_over_micro_batch_and_world(compose_train) -> None:
    cfg = compose_train("experiment=demo/pretrain", "stage.global_batch=32", "data.micro_batch_size=4")
    assert plan_run(cfg).accumulation == 8
    cfg = compose_train("experiment=demo/pretrain", "stage.global_batch=32", "data.micro_batch_size=4",
                        "trainer.devices=2", "trainer.num_nodes=2")
    plan = plan_run(cfg)
    assert (plan.world_size, plan.accumulation) == (4, 2)


def test_indivisible_global_batch_is_a_one_line_error_naming_the_keys(compose_train) -> None:
    cfg = compose_train("experiment=demo/pretrain", "stage.global_batch=30", "data.micro_batch_size=4")
    with pytest.raises(TrainConfigError) as err:
        plan_run(cfg)
    msg = str(err.value)
    assert "stage.global_batch=30" in msg and "data.micro_batch_size=4" in msg and "\n" not in msg


def test_contradicting_accumulation_and_bad_parts_fail_before_weights(compose_train) -> None:
    with pytest.raises(TrainConfigError, match="accumulate_grad_batches=3 contradicts"):
        plan_run(compose_train("+trainer.accumulate_grad_batches=3"))
    from dsvl.stages import FreezeConfigError

    with pytest.raises(FreezeConfigError, match="no 'vision.high' part"):
        plan_run(compose_train("model=tiny_siglip", "stage.trainable=[vision.high]"))


@pytest.mark.parametrize(
    ("recipe", "prompt_supervised"),
    [("demo/align", True), ("demo/pretrain", True), ("demo/sft", False)],
)
def test_loss_masks_per_stage(compose_train, recipe: str, prompt_supervised: bool) -> None:
    """Image tokens and padding never carry loss; SFT supervises only the answers."""
    from hydra.utils import get_class

    cfg = compose_train(f"experiment={recipe}", "data.schedule.start=0.5", "data.schedule.target=0.5")
    dm = build_datamodule(cfg, plan_run(cfg), get_class(cfg.stage._target_))
    tok = dm.encoder.text.tokenizer
    image_id = dm.image_token_id
    batches = iter(dm.train_dataset())
    seen_multimodal = False
    for _ in range(6):
        batch = next(batches)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        assert not bool((labels[ids == image_id] != -100).any())
        assert not bool((labels[mask == 0] != -100).any())
        if batch["modality"] == "multimodal":
            seen_multimodal = True
            row_text = tok.decode(labels[0][labels[0] != -100])
            if prompt_supervised:  # captions / documents: every text token after the images
                assert len(row_text.split()) >= 2
            else:
                assert "User" not in row_text and "?" not in row_text and "Assistant" not in row_text
    assert seen_multimodal


def test_pretrain_run_logs_metrics_and_keeps_one_modality_per_global_step(compose_train, tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import Callback

    cfg = compose_train("experiment=demo/pretrain", "trainer.max_steps=6", "data.schedule.warmup_steps=2",
                        "val_every_n_steps=3", "mc_val.limit=8")
    seen: dict[int, set[str]] = {}

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault(trainer.global_step, set()).add(batch["modality"])

    from dsvl.stages import runner

    original = runner.instantiate_group
    runner.instantiate_group = lambda node, what: original(node, what) + ([Record()] if what == "callback" else [])
    try:
        result = run_stage(cfg)
    finally:
        runner.instantiate_group = original
    assert result.steps == 6
    assert sorted(seen) == list(range(6)) and all(len(m) == 1 for m in seen.values())
    assert {m for s in seen.values() for m in s} == {"text", "multimodal"}
    rows = _metrics(result.output_dir)
    names = {k for r in rows for k, v in r.items() if v}
    for name in ("train/loss", "train/loss_text", "train/loss_multimodal", "train/language_ratio", "train/modality",
                 "train/lr", "train/grad_norm", "perf/tokens_per_s", "perf/samples_per_s", "perf/padding_frac",
                 "val/text_ppl", "val/mm_loss", "val/mc_acc"):
        assert name in names, name
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert len(steps) == len(set(steps)) == 6  # one logged row per global step, not per micro-batch
    assert all(r.get("train/modality_mismatch") in (None, "", "0.0") for r in rows)
    assert (result.output_dir / "config_resolved.yaml").is_file()
    assert result.checkpoint is not None and result.checkpoint.is_file()


def test_init_from_chains_stage_weights_and_resume_continues_exactly(compose_train, tmp_path: Path) -> None:
    from dsvl.model import build_model
    from dsvl.stages.checkpoint import InitFromError, lightning_state_dict, load_init_weights

    align = run_stage(compose_train("experiment=demo/align", out=tmp_path / "align"))
    state = lightning_state_dict(align.checkpoint)
    from omegaconf import OmegaConf

    model = build_model(OmegaConf.load(align.output_dir / "config_resolved.yaml").model)  # the run's aligned image token
    load_init_weights(model, align.checkpoint)
    for name, tensor in model.state_dict().items():
        if name in state:
            assert torch.equal(tensor, state[name]), name
    with pytest.raises(InitFromError, match="no such file"):
        load_init_weights(model, tmp_path / "missing.ckpt")
    # an exported (save_pretrained) directory works as init_from too
    model.save_pretrained(tmp_path / "exported")
    fresh = build_model(OmegaConf.load(align.output_dir / "config_resolved.yaml").model)
    load_init_weights(fresh, tmp_path / "exported")
    for name, tensor in fresh.state_dict().items():
        if name in state:
            assert torch.equal(tensor, state[name]), name

    # resume: 4 steps, then 2 more from the checkpoint == 6 steps straight (lr, loss, data order)
    common = ("experiment=demo/pretrain", "data.schedule.warmup_steps=2", "scheduler.warmup_steps=2",
              "scheduler.milestones=[3,5]", "validate_at_end=false")  # absolute milestones: a drop inside the resumed part
    straight = run_stage(compose_train(*common, "trainer.max_steps=6", out=tmp_path / "straight"))
    first = run_stage(compose_train(*common, "trainer.max_steps=4", out=tmp_path / "first"))
    resumed = run_stage(compose_train(*common, "trainer.max_steps=6", f"ckpt_path={first.checkpoint}", out=tmp_path / "resumed"))
    assert resumed.steps == 6
    by_step = lambda rows: {int(r["step"]): r for r in rows if r.get("train/loss")}  # noqa: E731
    a, b = by_step(_metrics(straight.output_dir)), by_step(_metrics(resumed.output_dir))
    assert float(a[5]["train/lr"]) == pytest.approx(float(a[4]["train/lr"]) * 0.1 / 0.316)
    for step in (4, 5):
        assert float(b[step]["train/lr"]) == pytest.approx(float(a[step]["train/lr"]), rel=1e-6)
        assert float(b[step]["train/modality"]) == float(a[step]["train/modality"])
        assert float(b[step]["train/loss"]) == pytest.approx(float(a[step]["train/loss"]), rel=1e-4)
