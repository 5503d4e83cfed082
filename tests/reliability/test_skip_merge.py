"""Skip counts are merged over DataLoader workers (each reads its own shards) and survive a resume."""
from __future__ import annotations

from .conftest import bad_prefixed_shards

from dsvl.data import DSVLDataModule
from dsvl.model.spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec

SPEC = VisionSpec((ImageInputSpec("pixel_values", 32, SIGLIP_MEAN, SIGLIP_STD),
                   ImageInputSpec("high_res_pixel_values", 64, CLIP_MEAN, CLIP_STD)), num_image_tokens=4)


def _datamodule(demo_data, urls: dict[str, list[str]]) -> DSVLDataModule:
    """Grouped steps alternating text / multimodal, 2 micro-batches of 2 per step, 2 workers, no shuffling."""
    return DSVLDataModule(
        tokenizer=str(demo_data / "tokenizer"), vision_spec=SPEC, micro_batch_size=2, max_length=128, packing=False,
        train_sources={m: {"urls": u, "weight": 1.0, "modality": m} for m, u in urls.items()},
        schedule={"start": 0.5, "target": 0.5, "warmup_steps": 0}, accumulate_grad_batches=2, num_workers=2,
        shuffle_buffer=0, system_prompt=None,
    )


def test_skip_counts_merge_over_workers_and_resume(tmp_path, demo_data):
    urls, planted = bad_prefixed_shards(tmp_path)
    dm = _datamodule(demo_data, urls)
    # micro-batches 0-7: steps text, mm, text, mm; worker k builds micro-batches k, k+2, ...: both read both modalities
    for _, batch in zip(range(8), dm.train_dataloader()):
        dm.record(batch)
    assert dm.skip_counts().as_dict() == dict(sorted(planted.items()))
    state = dm.state_dict()
    per_worker = [w["skipped"] for w in state["ranks"]["0"].values()]
    assert len(per_worker) == 2 and all(sum(c.values()) == 4 for c in per_worker)  # each worker saw half

    resumed = _datamodule(demo_data, urls)
    resumed.load_state_dict(state)
    assert resumed.skip_counts().as_dict() == dict(sorted(planted.items()))
    for _, batch in zip(range(2), resumed.train_dataloader()):  # continuing adds nothing: no new bad samples
        resumed.record(batch)
    assert resumed.skip_counts().as_dict() == dict(sorted(planted.items()))
