"""conf/data/*.yaml instantiate; DSVLDataModule inside a real Lightning Trainer: grouped global
steps under gradient accumulation, and exact resume from a Lightning checkpoint."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dsvl.data import DSVLDataModule

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


@pytest.mark.parametrize("name", ["demo_align", "demo_pretrain", "demo_sft"])
def test_demo_configs_instantiate_and_batch(name, demo_dir, hybrid_spec):
    cfg = OmegaConf.create({"paths": {"data_dir": str(demo_dir)}, "seed": 0, "data": OmegaConf.load(CONF / f"{name}.yaml")})
    dm = instantiate(cfg.data, vision_spec=hybrid_spec)
    assert isinstance(dm, DSVLDataModule)
    batch = dm.record(next(iter(dm.train_dataloader())))
    assert set(batch) >= {"input_ids", "attention_mask", "labels", "modality", "keys", "stats"}
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    val = next(iter(dm.val_dataloader()))
    assert val["modality"] in ("text", "multimodal")
    if name == "demo_sft":  # assistant-only labels: fewer supervised than real tokens
        assert (batch["labels"] != -100).sum() < batch["attention_mask"].sum() / 2


@pytest.mark.parametrize("name", ["pretrain_mixture", "sft_mixture"])
def test_paper_mixture_configs(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    weights = {k: v["weight"] for k, v in cfg.train_sources.items()}
    assert sum(weights.values()) == pytest.approx(100.0, abs=0.11)
    if name == "pretrain_mixture":
        assert weights["text_only"] == 70.0 and cfg.schedule.target == 0.7 and cfg.packing
    else:
        assert weights["text_sft"] == 47.9 and cfg.supervise == "assistant"


PREFIX_TO_CATEGORY = {
    "pretrain_mixture": {"text_": "text_only", "interleaved_": "interleaved", "caption_": "image_caption",
                         "table_chart_": "table_chart", "web_code_": "web_code", "scene_ocr_": "scene_ocr",
                         "document_ocr_": "document_ocr"},
    "sft_mixture": {"text_sft_": "text_sft", "taxonomy_": "in_house_taxonomy", "general_": "general_multimodal",
                    "table_chart_": "table_chart", "web_code_": "web_code"}}


@pytest.mark.parametrize("stage,base", [("stage2_pretrain", "pretrain_mixture"), ("stage3_sft", "sft_mixture")])
def test_recipes_fill_the_paper_categories_with_public_datasets(stage, base, tmp_path):
    from dsvl.cli._config import compose
    from dsvl.data import parse_sources

    table = {k: v["weight"] for k, v in OmegaConf.load(CONF / f"{base}.yaml").train_sources.items()}
    for size in ("1.3b", "7b"):
        cfg = compose([f"experiment=deepseek_vl_{size}/{stage}", f"paths.data_dir={tmp_path}"], output_dir=tmp_path)
        sources = parse_sources(cfg.data.train_sources)
        assert all(s.urls.startswith(f"{tmp_path}/public/") for s in sources)
        per_category: dict[str, float] = {}
        for s in sources:  # each source is named after the Table 1/2 category it fills
            category = next(c for p, c in PREFIX_TO_CATEGORY[base].items() if s.name.startswith(p))
            per_category[category] = per_category.get(category, 0.0) + s.weight
        assert per_category == pytest.approx(table, abs=1e-6)


class Recorder(L.LightningModule):
    """Records the modality and keys of every micro-batch with the optimizer step it belongs to."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, str, list[str]]] = []

    def training_step(self, batch, idx):
        assert "state" not in batch
        self.seen.append((self.global_step, batch["modality"], batch["keys"]))
        return (self.w * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _dm(demo_dir, spec, workers=0):
    from .conftest import pretrain_sources

    return DSVLDataModule(str(demo_dir / "tokenizer"), pretrain_sources(demo_dir), vision_spec=spec,
                          micro_batch_size=2, max_length=160, packing=True,
                          schedule=dict(start=1.0, target=0.5, warmup_steps=2), system_prompt=None,
                          shuffle_buffer=10, num_workers=workers)


def _trainer(tmp_path, max_steps, **kw):
    return L.Trainer(max_steps=max_steps, accumulate_grad_batches=3, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1,
                     default_root_dir=str(tmp_path), **kw)


def test_lightning_accumulation_and_exact_resume(tmp_path, demo_dir, hybrid_spec):
    full = Recorder()
    _trainer(tmp_path, 8).fit(full, datamodule=_dm(demo_dir, hybrid_spec))
    assert len(full.seen) == 24
    sched = _dm(demo_dir, hybrid_spec).schedule
    for step in range(8):  # every micro-batch of an optimizer step has that step's modality
        mods = {m for s, m, _ in full.seen if s == step}
        assert mods == {sched.modality(step)}, (step, mods)
    assert {m for _, m, _ in full.seen} == {"text", "multimodal"}

    first = Recorder()
    t = _trainer(tmp_path, 5)
    t.fit(first, datamodule=_dm(demo_dir, hybrid_spec))
    ckpt = tmp_path / "mid.ckpt"
    t.save_checkpoint(ckpt)
    resumed = Recorder()
    _trainer(tmp_path, 8).fit(resumed, datamodule=_dm(demo_dir, hybrid_spec), ckpt_path=str(ckpt))
    assert [k for _, _, k in first.seen + resumed.seen] == [k for _, _, k in full.seen]
    assert [s for s, _, _ in resumed.seen][0] == 5
