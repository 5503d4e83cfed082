"""Adding a vision encoder that transformers has is one YAML file: written here into a config dir of the test's own
(Hydra's searchpath), a tiny DINOv2 replaces the tiny preset's SigLIP and the model trains a step; the adaptor's input
width and the image-token count follow the new tower."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsvl.cli.presets import model_config
from dsvl.cli.models import build_model, vision_spec
from dsvl.errors import ConfigError
from dsvl.model.spec import CLIP_MEAN, CLIP_STD
from dsvl.model.vision import AutoVisionTower

# A user's new file: the tower, transformers' model_type, its config keys (random init here), normalisation.
# 24 px / patch 4 -> 6x6 = 36 patch tokens (DINOv2 puts a CLS token before them) of width 48: not the preset's 16 x 32.
TINY_DINOV2 = """\
_target_: dsvl.model.vision.VisionEncoder
low:
  _target_: dsvl.model.vision.AutoVisionTower
  model_type: dinov2
  pretrained: null
  hub_id: null
  mean: [0.485, 0.456, 0.406]
  std: [0.229, 0.224, 0.225]
  image_size: 24
  patch_size: 4
  hidden_size: 48
  mlp_ratio: 2
  num_hidden_layers: 2
  num_attention_heads: 2
"""
TINY_CLIP = dict(image_size=24, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


def test_a_new_encoder_is_one_yaml_and_trains(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "model" / "vision").mkdir(parents=True)
    (conf / "model" / "vision" / "tiny_dinov2.yaml").write_text(TINY_DINOV2)
    cfg = model_config("tiny_siglip", [f"hydra.searchpath=[file://{conf}]", "model/vision=tiny_dinov2"])
    torch.manual_seed(0)
    model = build_model(cfg)

    assert type(model.vision.low.model).__name__ == "Dinov2Model"
    spec = model.vision_spec
    assert model.num_image_tokens == spec.num_image_tokens == vision_spec(cfg).num_image_tokens == 36
    assert spec.inputs[0].size == 24 and spec.inputs[0].mean == (0.485, 0.456, 0.406)
    assert model.vision.info.embed_dim == 48 and model.adaptor.layers[0].in_features == 48  # derived, not in the YAML

    token = model.image_token_id
    text = torch.randint(3, 1000, (2, 6))
    input_ids = torch.cat([text[:, :2], torch.full((2, 36), token), text[:, 2:]], dim=1)
    labels = input_ids.masked_fill(input_ids == token, -100)
    out = model(input_ids=input_ids, labels=labels, pixel_values=torch.randn(2, 3, 24, 24))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grad = model.vision.low.model.embeddings.patch_embeddings.projection.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the loss reaches the new tower's first layer


def test_cls_token_is_dropped_and_siglip_output_is_unchanged() -> None:
    clip = AutoVisionTower(model_type="clip_vision_model", mean=CLIP_MEAN, std=CLIP_STD, **TINY_CLIP)
    pixels = torch.randn(2, 3, 24, 24)
    full = clip.model(pixel_values=pixels).last_hidden_state
    assert full.shape == (2, 1 + 9, 16)  # CLS + 3x3 patches
    assert torch.equal(clip(pixels), full[:, 1:])

    from dsvl.model.vision import SiglipTower

    siglip = SiglipTower(**TINY_CLIP)  # no CLS token: every token is a patch, as in transformers' DeepSeek-VL
    assert not siglip.model.config.vision_use_head
    assert torch.equal(siglip(pixels), siglip.model(pixel_values=pixels).last_hidden_state)


def test_clip_l_336_preset_sizes_on_meta() -> None:
    cfg = model_config("deepseek_vl_1.3b", ["model/vision=clip_l_336"])
    model = build_model(cfg, device="meta")
    assert type(model.vision.low.model).__name__ == "CLIPVisionModel"
    assert model.num_image_tokens == 576 and model.adaptor.layers[0].in_features == 1024


@pytest.mark.parametrize(("model_type", "message"), [
    ("dinov3x", r"^model\.vision\.low\.model_type='dinov3x' is not a transformers model type; accepted e\.g\. "),
    ("clip", r"^model\.vision\.low\.model_type='clip' is not a vision encoder's \(no .*image_size.*\); accepted e\.g\. "),
])
def test_wrong_model_type_is_one_line(model_type: str, message: str) -> None:
    cfg = model_config("tiny_siglip", ["model/vision=clip_l_336", f"model.vision.low.model_type={model_type}"])
    with pytest.raises(ConfigError, match=message) as err:
        build_model(cfg, device="meta")
    assert "\n" not in str(err.value)


def test_an_encoder_without_a_token_per_patch_is_refused() -> None:
    mae = AutoVisionTower(model_type="vit_mae", mean=CLIP_MEAN, std=CLIP_STD, **TINY_CLIP)  # keeps 1/4 of the patches
    with pytest.raises(ConfigError, match=r"^vision\.low: 'vit_mae' returns shape \(2, 3, 16\), not \(N, >= 9 patches, width\)"):
        mae(torch.randn(2, 3, 24, 24))
