"""Config presets, Hydra overrides, size checks on the meta device before any weights, the real sizes, and the
per-unit seeded init that makes a model's weights a function of the seed alone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import (
    DeepseekVLConfig,
    DeepseekVLForConditionalGeneration,
    DeepseekVLHybridConfig,
    DeepseekVLHybridForConditionalGeneration,
)

from dsvl.cli.models import build_model, vision_spec
from dsvl.errors import ConfigError
from dsvl.model import HybridSplitMLPGelu, MLPGelu
from dsvl.cli.presets import available_presets, model_config

from ._tiny import make_batch

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=list(overrides)).model


def test_hydra_override_swaps_tower_and_adaptor():
    cfg = _compose("+model=tiny", "model/vision=tiny_siglip", "model/adaptor=mlp_gelu")
    model = build_model(cfg)  # a DictConfig goes in as is
    assert model.vision.high is None and isinstance(model.adaptor, MLPGelu)
    assert model(**make_batch([1, 1], hybrid=False), return_logits=True).logits.shape == (2, 48, 1024)

    hybrid = build_model(_compose("+model=tiny_siglip", "model/vision=tiny_hybrid", "model/adaptor=hybrid_split_mlp_gelu"))
    assert hybrid.vision.high is not None and isinstance(hybrid.adaptor, HybridSplitMLPGelu)


def test_llm_override_and_derived_adaptor_widths():
    cfg = _compose("+model=tiny", "model.llm.hidden_size=96", "model.llm.vocab_size=2000", "model.image_token_id=1999")
    model = build_model(cfg)
    assert model.adaptor.proj.out_features == 96 and model.llm.config.vocab_size == 2000
    assert model.adaptor.high_proj.in_features == 64 and model.adaptor.low_proj.in_features == 32


def test_plain_constructors_build_what_hydra_builds():
    """`model/` needs no config resolver: partials (what `_partial_: true` makes) are completed by the model itself."""
    import functools

    import torch

    from dsvl.model import SamTower, SiglipTower, VisionEncoder, VisionLanguageModel, causal_lm

    from ._tiny import HF_LLAMA, HF_SAM, HF_SIGLIP, IMAGE_TOKEN

    siglip, sam = ({k: v for k, v in c.items() if k != "model_type"} for c in (HF_SIGLIP, HF_SAM))
    with torch.device("meta"):
        plain = VisionLanguageModel(VisionEncoder(SiglipTower(**siglip), functools.partial(SamTower, **sam)),
                                    functools.partial(HybridSplitMLPGelu), causal_lm(**HF_LLAMA), IMAGE_TOKEN)
    hydra = build_model(model_config("tiny"), device="meta")
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in hydra.state_dict().items()}
    assert plain.vision.high.info.grid == plain.vision.low.info.grid == 4  # SAM's grid derived from SigLIP's
    old_style = model_config("tiny")  # nodes written before `_partial_: true` (e.g. in older checkpoints' hparams)
    del old_style["adaptor"]["_partial_"], old_style["vision"]["high"]["_partial_"]
    assert build_model(old_style, device="meta").vision.high.info.grid == 4 and vision_spec(old_style).num_image_tokens == 16
    with pytest.raises(ConfigError, match=r"model\.adaptor: unknown keys \['depth'\] for HybridSplitMLPGelu"):
        VisionLanguageModel(plain.vision, functools.partial(HybridSplitMLPGelu, depth=2), plain.llm, IMAGE_TOKEN)


@pytest.mark.parametrize("vision", ["tiny_siglip", "tiny_sam", "tiny_hybrid", "siglip_l_384", "sam_b_1024", "hybrid_siglip_sam", "clip_l_336"])
@pytest.mark.parametrize("adaptor", ["linear", "mlp_gelu", "hybrid_split_mlp_gelu"])
def test_every_vision_and_adaptor_preset_plans_or_explains(vision, adaptor):
    cfg = _compose("+model=tiny", f"model/vision={vision}", f"model/adaptor={adaptor}")
    is_hybrid = "hybrid" in vision
    if adaptor == "hybrid_split_mlp_gelu" and not is_hybrid:
        with pytest.raises(ConfigError, match=r"needs the (low|high)-res \((SigLIP|SAM)\) width .*which these parts do not have"):
            build_model(cfg, device="meta")
        return
    model = build_model(cfg, device="meta")
    # tiny SAM alone: its 8x8 map / 4 (no SigLIP grid to follow); in the hybrid it follows SigLIP's 4x4
    expected_tokens = {"siglip_l_384": 576, "sam_b_1024": 576, "hybrid_siglip_sam": 576, "clip_l_336": 576, "tiny_sam": 4}.get(vision, 16)
    assert model.num_image_tokens == vision_spec(cfg).num_image_tokens == expected_tokens
    assert all(p.is_meta for p in model.parameters())


def test_full_presets_have_the_spec_sizes():
    assert set(available_presets()) >= {"tiny", "tiny_siglip", "deepseek_vl_1.3b", "deepseek_vl_7b"}
    big = model_config("deepseek_vl_7b")
    spec = vision_spec(big)
    assert spec.num_image_tokens == 576
    assert [(i.name, i.size) for i in spec.inputs] == [("pixel_values", 384), ("high_res_pixel_values", 1024)]
    assert spec.input("pixel_values").mean == (0.5, 0.5, 0.5)
    assert spec.input("high_res_pixel_values").mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    info = build_model(big, device="meta").vision.info
    assert info.low.embed_dim == 1024 and info.high.embed_dim == 1024 and big["llm"]["hidden_size"] == 4096
    assert big["hub_id"] == "deepseek-community/deepseek-vl-7b-chat" and big["pretrained"] is None
    assert big["image_token_id"] == 100015
    small = model_config("deepseek_vl_1.3b")
    assert vision_spec(small).num_image_tokens == 576 and build_model(small, device="meta").adaptor.layers[0].out_features == 2048
    assert small["hub_id"] == "deepseek-community/deepseek-vl-1.3b-chat"


def test_vision_spec_from_config_equals_the_built_model(tiny_cfg, tiny_siglip_cfg):
    for cfg in (tiny_cfg, tiny_siglip_cfg):
        assert vision_spec(cfg) == build_model(cfg).vision_spec


# transformers configs written from SPEC.md, independently of the YAML presets
SIGLIP_L = dict(model_type="siglip_vision_model", image_size=384, patch_size=16, hidden_size=1024, intermediate_size=4096,
                num_hidden_layers=24, num_attention_heads=16, vision_use_head=False)
SAM_B = dict(model_type="sam_vision_model", image_size=1024, patch_size=16, hidden_size=768, num_hidden_layers=12,
             num_attention_heads=12, window_size=14, global_attn_indexes=[2, 5, 8, 11], output_channels=256)
LLM_7B = dict(model_type="llama", hidden_size=4096, num_hidden_layers=30, num_attention_heads=32, num_key_value_heads=32,
              intermediate_size=11008, vocab_size=102400, max_position_embeddings=16384)
LLM_1_3B = dict(LLM_7B, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16, intermediate_size=5632)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("preset", "reference"),
    [
        ("deepseek_vl_7b", lambda: DeepseekVLHybridForConditionalGeneration(DeepseekVLHybridConfig(
            vision_config=SIGLIP_L, high_res_vision_config=SAM_B, text_config=LLM_7B, tie_word_embeddings=False))),
        ("deepseek_vl_1.3b", lambda: DeepseekVLForConditionalGeneration(DeepseekVLConfig(
            vision_config=SIGLIP_L, text_config=LLM_1_3B, tie_word_embeddings=False))),
    ],
)
def test_real_presets_on_meta_have_exactly_transformers_parameter_count(preset, reference):
    with torch.device("meta"):
        ours = build_model(model_config(preset))
        ref = reference()
    assert _count(ours) == _count(ref)
    if preset == "deepseek_vl_7b":
        assert 7.0e9 < _count(ours) < 7.5e9
    rows = {r["part"]: r["total"] for r in ours.parameter_summary()}
    assert rows["vision.low"] == _count(ref.model.vision_model)
    assert rows["adaptor"] == _count(ref.model.aligner)


@pytest.fixture
def no_weights(monkeypatch):
    """Making weights (random init or loading) fails the test: config errors must come from the meta build."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were made before the config was checked")

    monkeypatch.setattr("dsvl.cli.models.materialize", refuse)
    monkeypatch.setattr("dsvl.model.hf_interop.load_hf_pretrained", refuse)  # VisionLanguageModel.from_pretrained
    monkeypatch.setattr("transformers.PreTrainedModel.from_pretrained", refuse)


def _with(cfg: dict, path: str, value) -> dict:
    """A copy of cfg with one dotted key set."""
    import copy

    out = copy.deepcopy(cfg)
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("preset", "key", "value", "message"),
    [
        ("tiny_siglip", "adaptor.in_dim", 48, r"model\.adaptor\.in_dim=48 does not match the vision feature width \(32\)"),
        ("tiny_siglip", "adaptor.out_dim", 32, r"model\.adaptor\.out_dim=32 does not match llm hidden_size \(64\)"),
        ("tiny", "adaptor.high_in_dim", 32, r"high_in_dim=32 does not match the high-res \(SAM\) width \(64\)"),
        ("tiny", "vision.high.grid", 3, r"model\.vision\.high\.grid=3 does not match the low-res tower's grid \(4\)"),
        ("tiny_siglip", "adaptor._target_", "dsvl.model.adaptor.HybridSplitMLPGelu", r"unknown keys \['depth', 'in_dim'\] for HybridSplitMLPGelu"),
        ("tiny", "vision.low._target_", "dsvl.model.vision.NoSuchTower", r"model\.vision\.low\._target_=.*cannot be imported"),
        ("tiny", "adaptor._target_", "torch.nn.Identity", r"maps vision features of width 96 to width 96, but llm hidden_size is 64"),
        ("tiny", "llm.model_type", "not_a_model", r"model\.llm\.model_type='not_a_model' is not a transformers model type"),
        ("tiny", "image_token_id", 5000, r"model\.image_token_id=5000 is outside the LLM vocabulary \[0, 1024\)"),
        ("tiny_siglip", "adaptor.dept", 3, r"unknown keys \['dept'\]"),
        ("tiny", "vision.low.image_size", 30, "must be a multiple of"),
        ("tiny", "vision.low.hidden_sizee", 32, r"model\.vision\.low: unknown keys \['hidden_sizee'\] for transformers' SiglipVisionConfig"),
        ("tiny", "llm.num_attention_heads", 5, r"model\.llm: transformers' LlamaConfig rejects these settings: .*not a multiple"),
        ("tiny", "vision.high.hidden_size", "wide", r"model\.vision\.high: transformers' SamVisionConfig rejects"),
    ],
)
def test_parts_that_do_not_fit_give_one_line_errors_before_weights(no_weights, preset, key, value, message):
    cfg = _with(model_config(preset), key, value)
    with pytest.raises(ConfigError, match=message) as err:
        build_model(cfg)
    assert "\n" not in str(err.value)


def test_unknown_preset_names_are_clear_errors():
    with pytest.raises(ConfigError, match=r"unknown model preset 'tinyy'; accepted: .*tiny_siglip"):
        model_config("tinyy")
    with pytest.raises(ConfigError, match=r"model/vision=nope: unknown option for 'model/vision'; accepted: .*tiny_siglip") as err:
        model_config("tiny", ["model/vision=nope"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="lacks \\['adaptor'\\]"):
        build_model({"vision": model_config("tiny")["vision"], "llm": model_config("tiny")["llm"]})


def test_meta_build_holds_no_weights_and_materialize_is_a_function_of_the_seed(tiny_cfg):
    from dsvl.model import materialize

    meta = build_model(tiny_cfg, device="meta")
    assert all(t.is_meta for t in (*meta.parameters(), *meta.buffers()))
    torch.manual_seed(3)
    seeded = build_model(tiny_cfg)  # the default path: meta build + materialize under the global seed
    again = materialize(build_model(tiny_cfg, device="meta"), seed=3)
    other = materialize(build_model(tiny_cfg, device="meta"), seed=4)
    state, other_state = again.state_dict(), other.state_dict()
    for name, value in seeded.state_dict().items():
        assert torch.equal(value, state[name]), name
    weights = [n for n, p in seeded.named_parameters() if p.numel() > 1 and float(p.std()) > 0]
    assert weights and all(not torch.equal(state[n], other_state[n]) for n in weights)
    assert seeded.vision.high.alpha.item() == 0.0  # DeepSeek-VL's SAM mix starts closed
