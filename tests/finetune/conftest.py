"""Fine-tuning fixtures: tiny random "released" checkpoints of both transformers classes, laid out like
deepseek-community/deepseek-vl-*-chat (config, safetensors, tokenizer with DeepSeek's special tokens and
`<image_placeholder>`, processor with the deepseek chat template and DeepSeek-VL's system prompt)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))

from _tiny import HF_LLAMA, HF_SAM, HF_SIGLIP  # noqa: E402
from train_fixtures import FAST, compose_train, demo_data  # noqa: E402,F401

ARCHS = ("deepseek_vl", "deepseek_vl_hybrid")


def save_released_like(arch: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A random transformers DeepSeek-VL checkpoint of the tiny sizes with tokenizer and processor files."""
    from transformers import (
        AutoTokenizer,
        DeepseekVLConfig,
        DeepseekVLForConditionalGeneration,
        DeepseekVLHybridConfig,
        DeepseekVLHybridForConditionalGeneration,
        DeepseekVLHybridProcessor,
        DeepseekVLProcessor,
    )

    from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT
    from dsvl.model import hf_image_processor
    from dsvl.model.export import deepseek_chat_template
    from dsvl.model.spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    # a wide init: the random LLM's greedy answers then depend on the image and the question
    text = {**HF_LLAMA, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "initializer_range": 0.2}
    common = dict(text_config=text,
                  vision_config=HF_SIGLIP, image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"))
    torch.manual_seed(seed)
    low = ImageInputSpec("pixel_values", 32, SIGLIP_MEAN, SIGLIP_STD)
    if arch == "deepseek_vl":
        model = DeepseekVLForConditionalGeneration(DeepseekVLConfig(**common))
        spec, processor_cls = VisionSpec((low,), 16), DeepseekVLProcessor
    else:
        model = DeepseekVLHybridForConditionalGeneration(DeepseekVLHybridConfig(**common, high_res_vision_config=HF_SAM))
        with torch.no_grad():
            model.model.high_res_vision_alpha.fill_(0.3)  # the global-attention path contributes
        spec = VisionSpec((low, ImageInputSpec("high_res_pixel_values", 64, CLIP_MEAN, CLIP_STD)), 16)
        processor_cls = DeepseekVLHybridProcessor
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    processor_cls(image_processor=hf_image_processor(spec), tokenizer=tokenizer, num_image_tokens=16,
                  chat_template=deepseek_chat_template(DEFAULT_SYSTEM_PROMPT, tokenizer.eos_token)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def released(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """arch -> a tiny released-like checkpoint directory (made once per session)."""
    root = tmp_path_factory.mktemp("released")
    return {arch: save_released_like(arch, demo_data / "tokenizer", root / arch) for arch in ARCHS}
