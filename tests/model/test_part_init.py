"""Per-part initialisation from hub layouts (issue 12, item 4): SigLIP from a full `SiglipModel`, SAM from a full
`SamModel`, the LLM from a causal-LM checkpoint; a checkpoint missing any of a part's weights is a one-line error."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, SamConfig, SamModel, SiglipConfig, SiglipModel

from dsvl.errors import CheckpointError
from dsvl.cli.models import build_model
from dsvl.model import ConfigError, materialize, weight_sources

from ._tiny import HF_LLAMA, HF_SAM, HF_SIGLIP


def _plain(sizes: dict) -> dict:
    return {k: v for k, v in sizes.items() if k != "model_type"}


@pytest.fixture(scope="module")
def hub_layouts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100)
    models = {
        "siglip": SiglipModel(SiglipConfig(vision_config=_plain(HF_SIGLIP), text_config=text)),
        "sam": SamModel(SamConfig(vision_config=_plain(HF_SAM))),
        "llm": LlamaForCausalLM(LlamaConfig(**_plain(HF_LLAMA))),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
    return {"root": root, **models}


def test_each_part_loads_every_weight_from_its_hub_layout(tiny_cfg, hub_layouts) -> None:
    cfg = copy.deepcopy(tiny_cfg)
    root = hub_layouts["root"]
    cfg["vision"]["low"]["pretrained"] = str(root / "siglip")
    cfg["vision"]["high"]["pretrained"] = str(root / "sam")
    cfg["llm"]["pretrained"] = str(root / "llm")
    model = build_model(cfg)
    pairs = [
        (model.vision.low.model.state_dict(), hub_layouts["siglip"].vision_model.state_dict()),
        (model.vision.high.model.state_dict(), hub_layouts["sam"].vision_encoder.state_dict()),
        (model.llm.state_dict(), hub_layouts["llm"].state_dict()),
    ]
    for ours, theirs in pairs:
        for name, tensor in ours.items():
            ref = theirs.get(name, theirs.get(name.removeprefix("vision_encoder.")))
            assert ref is not None and torch.equal(tensor, ref), name
    meta = build_model(cfg, device="meta")  # the sharded builds' reader (FSDP2, ZeRO-3): the same weights
    materialize(meta, sources=weight_sources(meta))
    for name, tensor in meta.state_dict().items():
        if name.startswith(("vision.low.model.", "vision.high.model.", "llm.")):
            assert torch.equal(tensor, model.state_dict()[name]), name


@pytest.mark.parametrize(("part", "wrong"), [("low", "llm"), ("high", "siglip"), ("llm", "sam")])
def test_a_checkpoint_without_the_part_is_a_one_line_error(tiny_cfg, hub_layouts, part, wrong) -> None:
    cfg = copy.deepcopy(tiny_cfg)
    node = cfg["llm"] if part == "llm" else cfg["vision"][part]
    node["pretrained"] = str(hub_layouts["root"] / wrong)
    with pytest.raises(ConfigError, match=r"pretrained=.*(weights are not in that checkpoint|cannot load it as)") as err:
        build_model(cfg)
    assert "\n" not in str(err.value)
    meta = build_model(cfg, device="meta")  # the sharded builds' reader (FSDP2, ZeRO-3) names the key too
    with pytest.raises(CheckpointError, match="weights of this model are not in the checkpoint") as err:
        materialize(meta, sources=weight_sources(meta))
    key = "model.llm" if part == "llm" else f"model.vision.{part}"
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{key}.pretrained={node['pretrained']}: ")
