"""Shared fixtures for the data tests: the demo tokenizer (of tests/conftest.py's `demo_dir`) and tiny vision specs."""
from __future__ import annotations

import pytest

from dsvl.model.spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec


@pytest.fixture(scope="session")
def tokenizer(demo_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_dir / "tokenizer"))


@pytest.fixture()
def hybrid_spec() -> VisionSpec:
    return VisionSpec((ImageInputSpec("pixel_values", 32, SIGLIP_MEAN, SIGLIP_STD),
                       ImageInputSpec("high_res_pixel_values", 64, CLIP_MEAN, CLIP_STD)), num_image_tokens=4)


def pretrain_sources(d, split="train"):
    return {
        "text": {"urls": f"{d}/pretrain/text/{split}", "weight": 1.0, "modality": "text"},
        "caption": {"urls": f"{d}/pretrain/caption/{split}", "weight": 0.6, "modality": "multimodal"},
        "interleaved": {"urls": f"{d}/pretrain/interleaved/{split}", "weight": 0.4, "modality": "multimodal"},
    }
