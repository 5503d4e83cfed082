"""Exact parity with transformers' DeepSeek-VL, both architectures, both directions (issue 2, item 3)."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    DeepseekVLConfig,
    DeepseekVLForConditionalGeneration,
    DeepseekVLHybridConfig,
    DeepseekVLHybridForConditionalGeneration,
)

from dsvl.cli.models import build_model
from dsvl.model import ConfigError, VisionLanguageModel, config_from_hf, hf_image_processor
from dsvl.cli.presets import model_config

from dsvl.model.hf_keys import key_map

from ._tiny import HF_LLAMA, HF_SAM, HF_SIGLIP, IMAGE_TOKEN, make_batch

TOL = 1e-4


def _hf_model(arch: str, tie: bool) -> torch.nn.Module:
    """A random transformers DeepSeek-VL model of the tiny sizes (SigLIP with its unused pooling head, as transformers defaults)."""
    torch.manual_seed(1)
    common = dict(text_config=HF_LLAMA, vision_config=HF_SIGLIP, image_token_id=IMAGE_TOKEN, tie_word_embeddings=tie)
    if arch == "deepseek_vl":
        model = DeepseekVLForConditionalGeneration(DeepseekVLConfig(**common))
    else:
        model = DeepseekVLHybridForConditionalGeneration(DeepseekVLHybridConfig(**common, high_res_vision_config=HF_SAM))
        with torch.no_grad():
            model.model.high_res_vision_alpha.fill_(0.7)  # exercise the global-attention path (0 at init)
    return model.eval()


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize(("arch", "tie"), [("deepseek_vl", True), ("deepseek_vl_hybrid", False)])
def test_transformers_dir_loads_with_same_logits_and_loss(tmp_path, arch, tie):
    hf = _hf_model(arch, tie)
    hf.save_pretrained(tmp_path)
    model = VisionLanguageModel.from_pretrained(tmp_path).eval()
    assert (model.vision.high is not None) == (arch == "deepseek_vl_hybrid")
    assert (model.llm.lm_head.weight is model.llm.get_input_embeddings().weight) == tie
    # model.config describes what was loaded (SigLIP's pooling head included): it rebuilds the same model
    with torch.device("meta"):
        rebuilt = build_model(model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}

    batch = make_batch([2, 1], hybrid=arch == "deepseek_vl_hybrid")  # three images, two in the first sample
    with torch.no_grad():
        ours = model(**batch)
        ref = hf(**batch)
    assert (ours.logits - ref.logits).abs().max().item() <= TOL
    assert abs(ours.loss.item() - ref.loss.item()) <= TOL
    assert ours.num_loss_tokens.item() == (batch["labels"][:, 1:] != -100).sum().item()


@pytest.mark.parametrize("preset", ["tiny_siglip", "tiny"])
def test_dsvl_model_exports_to_transformers_with_same_logits(tmp_path, preset):
    torch.manual_seed(2)
    model = build_model(model_config(preset)).eval()
    if model.vision.high is not None:
        with torch.no_grad():
            model.vision.high.alpha.fill_(-0.4)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == ("deepseek_vl_hybrid" if preset == "tiny" else "deepseek_vl")
    assert saved["tie_word_embeddings"] is False and saved["image_token_id"] == IMAGE_TOKEN
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "preprocessor_config.json").exists()

    hf = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    batch = make_batch([1, 2], hybrid=preset == "tiny", seed=3)
    with torch.no_grad():
        ours, ref = model(**batch), hf(**batch)
    assert (ours.logits - ref.logits).abs().max().item() <= TOL
    assert abs(ours.loss.item() - ref.loss.item()) <= TOL


def test_tied_embeddings_survive_export_and_reload(tmp_path, tiny_siglip_cfg):
    cfg = {**tiny_siglip_cfg, "llm": {**tiny_siglip_cfg["llm"], "tie_word_embeddings": True}}
    model = build_model(cfg)
    assert model.llm.lm_head.weight is model.llm.get_input_embeddings().weight
    model.save_pretrained(tmp_path)
    hf = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert hf.lm_head.weight.data_ptr() == hf.model.language_model.embed_tokens.weight.data_ptr()
    back = VisionLanguageModel.from_pretrained(tmp_path)
    assert back.llm.lm_head.weight is back.llm.get_input_embeddings().weight
    assert torch.equal(back.llm.lm_head.weight, model.llm.lm_head.weight)


def _renamed(state: dict, arch: str, to_hf: bool = False) -> dict:
    """Every key renamed through the key table; a key the table does not map fails the test."""
    pairs = [(d, h) if to_hf else (h, d) for h, d in key_map(arch)]
    out = {}
    for key, value in state.items():
        src, dst = next(((a, b) for a, b in pairs if key == a or (a.endswith(".") and key.startswith(a))), (None, None))
        assert src is not None, f"{key}: no {arch} counterpart"
        out[dst + key[len(src):]] = value
    return out


@pytest.mark.parametrize("arch", ["deepseek_vl", "deepseek_vl_hybrid"])
def test_state_dict_key_mapping_round_trips(arch):
    hf = _hf_model(arch, tie=False)
    model = build_model(config_from_hf(hf.config)).eval()
    converted = _renamed(hf.state_dict(), arch)
    model.load_state_dict(converted, strict=True)  # every key mapped, none missing
    back = _renamed(model.state_dict(), arch, to_hf=True)
    assert back.keys() == hf.state_dict().keys()
    batch = make_batch([1, 1], hybrid=arch == "deepseek_vl_hybrid", seed=4)
    with torch.no_grad():
        assert (model(**batch).logits - hf(**batch).logits).abs().max().item() <= TOL


def test_whole_model_pretrained_key_loads_checkpoint_and_checks_shapes(tmp_path, tiny_cfg, tiny_siglip_cfg):
    source = build_model(tiny_cfg)
    source.save_pretrained(tmp_path)
    loaded = build_model({**tiny_cfg, "pretrained": str(tmp_path)})
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="does not have the configured shapes"):
        build_model({**tiny_siglip_cfg, "pretrained": str(tmp_path)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: {**c, "adaptor": {"_target_": "dsvl.model.adaptor.LinearAdaptor"}}, "no transformers counterpart for adaptor LinearAdaptor"),
        (lambda c: {**c, "adaptor": {**c["adaptor"], "depth": 3}}, "depth 3"),
    ],
)
def test_export_without_transformers_counterpart_is_a_clear_error(tmp_path, tiny_siglip_cfg, change, message):
    model = build_model(change(tiny_siglip_cfg))
    with pytest.raises(ConfigError, match=message):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_image_processor_matches_the_model_inputs(tiny_cfg):
    from PIL import Image

    model = build_model(tiny_cfg)
    processor = hf_image_processor(model.vision_spec)
    out = processor(images=[Image.new("RGB", (50, 30), (200, 10, 10))], return_tensors="pt")
    assert tuple(out["pixel_values"].shape) == (1, 3, 32, 32)
    assert tuple(out["high_res_pixel_values"].shape) == (1, 3, 64, 64)
    with torch.no_grad():
        features = model.encode_images(out["pixel_values"], out["high_res_pixel_values"])
    assert features.shape == (1, model.num_image_tokens, 64)
    # a 50x30 image is padded square at the top with transformers' background colour (CLIP mean * 255,
    # SPEC.md 2: [122, 116, 104]), then each branch normalises with its own mean/std
    background = torch.tensor([122, 116, 104]) / 255
    assert torch.allclose(out["pixel_values"][0, :, 0, 0], (background - 0.5) / 0.5, atol=1e-3)
    assert out["high_res_pixel_values"][0, :, 0, 0].abs().max() < 0.05


def test_loading_a_non_deepseek_checkpoint_is_a_clear_error(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in HF_LLAMA.items() if k != "model_type"})).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="model_type 'llama' is not a DeepSeek-VL checkpoint; accepted: deepseek_vl, deepseek_vl_hybrid"):
        VisionLanguageModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        VisionLanguageModel.from_pretrained(tmp_path, trust_remote_code=True)
