"""Stage runs through `train(cfg)` on the tiny model and small demo data: accumulation from the global
batch and the Trainer's world size, one modality per global step, loss masks per stage, logged metric
names, weight decay groups, init_from, exact resume, self-describing checkpoints."""
from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from dsvl.cli.train import build_datamodule, check_run, set_accumulation, train
from dsvl.errors import ConfigError

IMAGE_TOKEN = "<image_placeholder>"


def _metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "csv" / "metrics.csv").open()))


def _by_step(rows: list[dict[str, str]]) -> dict[int, dict[str, str]]:
    """The values logged at each step, merged over rows (loggers and monitors write their own rows)."""
    merged: dict[int, dict[str, str]] = {}
    for r in rows:
        merged.setdefault(int(r["step"]), {}).update({k: v for k, v in r.items() if v})
    return merged


def _accumulation(cfg) -> int:
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], _convert_="all")
    set_accumulation(cfg, trainer)
    return trainer.accumulate_grad_batches


def test_accumulation_is_global_batch_over_micro_batch_and_trainer_world(compose_train) -> None:
    assert _accumulation(compose_train("experiment=demo/pretrain", "stage.global_batch=32", "data.micro_batch_size=4")) == 8
    cfg = compose_train("experiment=demo/pretrain", "stage.global_batch=32", "data.micro_batch_size=4", "trainer.devices=2",
                        "trainer.num_nodes=2")
    assert _accumulation(cfg) == 2  # the Trainer's world size: 2 devices x 2 nodes


def test_batch_arithmetic_and_parts_are_one_line_errors(compose_train) -> None:
    with pytest.raises(ConfigError) as err:
        _accumulation(compose_train("experiment=demo/pretrain", "stage.global_batch=30", "data.micro_batch_size=4"))
    assert "stage.global_batch=30" in str(err.value) and "data.micro_batch_size=4" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="accumulate_grad_batches=3 contradicts"):
        _accumulation(compose_train("+trainer.accumulate_grad_batches=3"))
    with pytest.raises(ConfigError, match="no 'vision.high' part"):
        check_run(compose_train("model=tiny_siglip", "stage.trainable=[vision.high]"))


@pytest.mark.parametrize(
    ("recipe", "prompt_supervised"),
    [("demo/align", True), ("demo/pretrain", True), ("demo/sft", False)],
)
def test_loss_masks_per_stage(compose_train, recipe: str, prompt_supervised: bool) -> None:
    """Image tokens and padding never carry loss; SFT supervises only the answers, by the stage's own
    default: the data config's `supervise` is removed, so only `SFTStage.supervise` can decide."""
    from hydra.utils import get_class

    cfg = compose_train(f"experiment={recipe}", "data.schedule.start=0.5", "data.schedule.target=0.5", "~data.supervise")
    dm = build_datamodule(cfg, 1, get_class(cfg.stage._target_).supervise)
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


def test_biases_and_norms_get_no_weight_decay(compose_train) -> None:
    from dsvl.cli.models import build_model
    from dsvl.stages import PretrainStage

    cfg = compose_train("experiment=demo/pretrain")
    stage = PretrainStage(build_model(cfg.model), optimizer=partial(torch.optim.AdamW, lr=0.1, weight_decay=0.5))
    optimizer = stage.configure_optimizers()
    before = {id(p): p.detach().clone() for p in stage.trainable_parameters()}
    for p in stage.trainable_parameters():
        p.grad = torch.zeros_like(p)  # no gradient signal: only weight decay can move a weight
    optimizer.step()
    one_d = [p for p in stage.trainable_parameters() if p.ndim < 2]
    matrices = [p for p in stage.trainable_parameters() if p.ndim >= 2]
    assert one_d and matrices
    assert all(torch.equal(p, before[id(p)]) for p in one_d)  # biases and norm weights untouched
    assert all(not torch.equal(p, before[id(p)]) for p in matrices)  # matrices decayed


def test_pretrain_run_logs_metrics_and_keeps_one_modality_per_global_step(compose_train, tmp_path: Path) -> None:
    record = tmp_path / "modalities.txt"
    cfg = compose_train("experiment=demo/pretrain", "trainer.max_steps=6", "data.schedule.warmup_steps=2",
                        "val_every_n_steps=3", "mc_val.limit=8", "+callbacks.record._target_=train_fixtures.ModalityRecorder",
                        f"+callbacks.record.path={record}")
    metrics = train(cfg)
    assert metrics["trainer/global_step"] == 6 and {"train/loss_text", "train/loss_multimodal", "val/mc_acc"} <= set(metrics)
    lines = record.read_text().split("\n")[:-1]
    # train/loss is a torchmetrics object fed once per global step, logged as one (so Lightning reset it at epoch end)
    assert lines.pop() == "train_loss_updates 6 0"
    seen: dict[int, set[str]] = {}
    for line in lines:
        step, modality = line.split()
        seen.setdefault(int(step), set()).add(modality)
    assert sorted(seen) == list(range(6)) and all(len(m) == 1 for m in seen.values())
    assert {m for s in seen.values() for m in s} == {"text", "multimodal"}
    run = Path(cfg.paths.output_dir)
    rows = _metrics(run)
    names = {k for r in rows for k, v in r.items() if v}
    for name in ("train/loss", "train/loss_text", "train/loss_multimodal", "train/language_ratio", "train/modality",
                 "train/lr/decay", "train/grad_norm", "train/device/samples_per_sec", "train/device/items_per_sec",
                 "train/device/flops_per_sec",
                 "val/text_ppl", "val/mm_loss", "val/mc_acc"):
        assert name in names, name
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == list(range(6))  # one logged row per global step, not per micro-batch
    assert [int(r["step"]) for r in rows if r.get("train/lr/decay")] == list(range(6))  # learning rates too
    assert all(r.get("train/modality_mismatch") in (None, "", "0.0") for r in rows)
    assert (run / "config_resolved.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


def test_init_from_chains_stage_weights_and_resume_continues_exactly(compose_train, tmp_path: Path) -> None:
    from dsvl.cli.evaluate import load_for_inference
    from dsvl.cli.models import build_model
    from dsvl.cli.models import load_stage_checkpoint
    from dsvl.stages.checkpoint import InitFromError, load_init_weights, read_checkpoint

    align_cfg = compose_train("experiment=demo/align", out=tmp_path / "align")
    train(align_cfg)
    ckpt = tmp_path / "align" / "checkpoints" / "last.ckpt"
    state = {k.removeprefix("model."): v for k, v in read_checkpoint(ckpt)["state_dict"].items()}
    loaded = load_stage_checkpoint(ckpt)  # the checkpoint alone: no run config needed
    assert loaded.hparams["stage_name"] == "align" and loaded.hparams["image_token_id"] == align_cfg.model.image_token_id
    assert Path(loaded.hparams["tokenizer"], "tokenizer_config.json").is_file()
    inference = load_for_inference(ckpt)  # dsvl-eval / dsvl-chat: tokenizer and system prompt from the checkpoint too
    assert inference.system_prompt is None and inference.tokenizer_path == loaded.hparams["tokenizer"]  # demo_align: none
    for name, tensor in loaded.model.state_dict().items():
        if name in state:
            assert torch.equal(tensor, state[name]), name
    with pytest.raises(InitFromError, match="no such file"):
        load_init_weights(loaded.model, tmp_path / "missing.ckpt")
    # an exported (save_pretrained) directory works as init_from too
    loaded.model.save_pretrained(tmp_path / "exported")
    fresh = build_model(align_cfg.model)
    load_init_weights(fresh, tmp_path / "exported")
    for name, tensor in fresh.state_dict().items():
        if name in state:
            assert torch.equal(tensor, state[name]), name

    # resume: 4 steps, then 2 more from the checkpoint == 6 steps straight (lr, loss, data order)
    common = ("experiment=demo/pretrain", "data.schedule.warmup_steps=2", "scheduler.warmup_steps=2",
              "scheduler.milestones=[3,5]", "validate_at_end=false")  # absolute milestones: a drop inside the resumed part
    train(compose_train(*common, "trainer.max_steps=6", out=tmp_path / "straight"))
    train(compose_train(*common, "trainer.max_steps=4", out=tmp_path / "first"))
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train(compose_train(*common, "trainer.max_steps=6", f"ckpt_path={first}", out=tmp_path / "resumed"))
    assert resumed["trainer/global_step"] == 6
    a, b = _by_step(_metrics(tmp_path / "straight")), _by_step(_metrics(tmp_path / "resumed"))
    assert float(a[5]["train/lr/decay"]) == pytest.approx(float(a[4]["train/lr/decay"]) * 0.1 / 0.316)
    for step in (4, 5):
        assert float(b[step]["train/lr/decay"]) == pytest.approx(float(a[step]["train/lr/decay"]), rel=1e-6)
        assert float(b[step]["train/modality"]) == float(a[step]["train/modality"])
        assert float(b[step]["train/loss"]) == pytest.approx(float(a[step]["train/loss"]), rel=1e-4)
