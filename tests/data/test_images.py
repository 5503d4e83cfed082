"""Image preprocessing equals transformers' DeepSeek-VL image processors (PIL backends)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import DeepseekVLImageProcessorPil
from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
    DeepseekVLHybridImageProcessorPil,
)

from dsvl.data import ImagePreprocessor
from dsvl.data.images import background_color
from dsvl.model.spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec

SIZES = [(50, 80), (64, 64), (100, 30), (7, 200), (384, 500)]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]


def test_single_tower_matches_deepseek_vl(images):
    spec = VisionSpec((ImageInputSpec("pixel_values", 48, CLIP_MEAN, CLIP_STD),), 16)
    ref = DeepseekVLImageProcessorPil(size={"height": 48, "width": 48}, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    expected = ref(images, return_tensors="pt")["pixel_values"]
    got = ImagePreprocessor(spec)(images)["pixel_values"]
    assert got.shape == expected.shape == (len(images), 3, 48, 48)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() < 1e-5


def test_hybrid_matches_deepseek_vl_hybrid(images, hybrid_spec):
    ref = DeepseekVLHybridImageProcessorPil(
        size={"height": 32, "width": 32}, high_res_size={"height": 64, "width": 64},
        image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, high_res_image_mean=CLIP_MEAN, high_res_image_std=CLIP_STD)
    expected = ref(images, return_tensors="pt")
    got = ImagePreprocessor(hybrid_spec)(images)
    for name in ("pixel_values", "high_res_pixel_values"):
        assert got[name].shape == expected[name].shape
        assert (got[name] - expected[name]).abs().max() < 1e-5


def test_padding_colour_and_min_side():
    assert background_color(CLIP_MEAN) == (122, 116, 104)  # SPEC.md §2 (7B SAM)
    spec = VisionSpec((ImageInputSpec("high_res_pixel_values", 64, CLIP_MEAN, CLIP_STD),), 4)
    pre = ImagePreprocessor(spec)
    sq = pre.squares(Image.new("RGB", (200, 2), (255, 255, 255)))["high_res_pixel_values"]
    arr = np.asarray(sq)
    assert arr.shape == (64, 64, 3)
    assert tuple(arr[0, 0]) == (122, 116, 104)  # padded background
    assert (arr[32, 32] > 200).all()  # the 14-pixel (min side) white strip is centred
    assert int((arr[:, 32] > 200).all(axis=1).sum()) == 14
