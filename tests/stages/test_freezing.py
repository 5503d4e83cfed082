"""Each stage freezes what the paper freezes; frozen parts leave the optimizer and stay in eval mode."""
from __future__ import annotations

import pytest
import torch

from dsvl.stages import AlignStage, FreezeConfigError, PretrainStage, SFTStage, expand_part_names, freeze_table

STAGES = {s.stage_name: s for s in (AlignStage, PretrainStage, SFTStage)}

EXPECTED = {  # the DeepSeek-VL paper: what trains in each stage
    "align": {"adaptor"},
    "pretrain": {"adaptor", "llm"},
    "sft": {"adaptor", "llm", "vision.low"},
}


def _tiny(name: str = "tiny"):
    from hydra import compose, initialize_config_dir

    from dsvl.cli._config import CONFIG_DIR
    from dsvl.cli.models import build_model

    with initialize_config_dir(str(CONFIG_DIR / "model"), version_base="1.3"):
        cfg = compose(name)
    return build_model(cfg)


@pytest.fixture(scope="module")
def tiny_state() -> dict:
    return _tiny().state_dict()


@pytest.fixture
def model(tiny_state):
    m = _tiny()
    m.load_state_dict(tiny_state)
    return m


def _optimizer_ids(stage) -> set[int]:
    opt = stage.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    return {id(p) for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("name", ["align", "pretrain", "sft"])
def test_stage_default_freezing_and_optimizer_contents(name: str, model) -> None:
    stage = STAGES[name](model)
    parts = model.parts()
    assert set(stage.trainable_parts) == EXPECTED[name]
    for part, module in parts.items():
        grads = {p.requires_grad for p in module.parameters()}
        assert grads == {part in EXPECTED[name]}, part
    trainable = {id(p) for part in EXPECTED[name] for p in parts[part].parameters()}
    assert _optimizer_ids(stage) == trainable  # frozen parts are not in the optimizer at all
    rows = {r["part"]: r for r in model.parameter_summary()}
    for part in parts:
        assert rows[part]["trainable"] == (rows[part]["total"] if part in EXPECTED[name] else 0)


def test_optimizer_is_adamw_095_wd0_by_default(model) -> None:
    opt = PretrainStage(model).configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["betas"] == (0.9, 0.95) and g["weight_decay"] == 0.0 for g in opt.param_groups)
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-5)


@pytest.mark.parametrize("name", ["align", "pretrain", "sft"])
def test_frozen_parts_stay_in_eval_mode_after_train(name: str, model) -> None:
    stage = STAGES[name](model)
    model.eval()
    stage.train()
    for part, module in model.parts().items():
        modes = {m.training for m in module.modules()}
        assert modes == {part in EXPECTED[name]}, part


@pytest.mark.parametrize("name", ["pretrain", "sft"])
def test_fit_trains_with_frozen_parts_in_eval_mode_whatever_mode_the_model_came_in(name: str, model) -> None:
    """Lightning keeps the modules' modes at fit start: the stage itself must put frozen parts in eval."""
    import lightning.pytorch as pl

    modes = {}

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            modes.update({part: {m.training for m in module.modules()} for part, module in pl_module.model.parts().items()})

    ids = torch.randint(3, 100, (2, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(), "modality": "text"}
    model.eval()  # as transformers' from_pretrained leaves a loaded model
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Record()])
    trainer.fit(STAGES[name](model), train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    assert modes == {part: {part in EXPECTED[name]} for part in model.parts()}


def test_trainable_override_unfreezes_sam_in_sft(model) -> None:
    stage = SFTStage(model, trainable=["adaptor", "llm", "vision.low", "vision.high"])
    assert stage.frozen_parts == []
    assert all(p.requires_grad for p in model.parameters())
    stage = SFTStage(model, trainable=["adaptor", "llm", "vision"])  # alias of both towers
    assert set(stage.trainable_parts) == {"adaptor", "llm", "vision.low", "vision.high"}


def test_unknown_or_absent_parts_fail_in_one_line(model) -> None:
    with pytest.raises(FreezeConfigError, match="unknown part 'encoder'") as err:
        AlignStage(model, trainable=["encoder"])
    assert "\n" not in str(err.value)
    with pytest.raises(FreezeConfigError, match="no 'vision.high' part"):
        expand_part_names(["vision.high"], ["vision.low", "adaptor", "llm"])


def test_freeze_table_lists_every_part_with_counts(model) -> None:
    AlignStage(model)
    table = freeze_table(model.parameter_summary())
    adaptor = sum(p.numel() for p in model.parts()["adaptor"].parameters())
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]}
    assert rows["adaptor"] == ["train", f"{adaptor:,}", f"{adaptor:,}"]
    assert rows["llm"][0] == rows["vision.low"][0] == rows["vision.high"][0] == "frozen"
    assert rows["llm"][2] == "0"
