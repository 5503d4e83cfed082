"""Complete exports (issue 12, item 3): AutoProcessor + chat template + processor + generate on a dsvl export give
dsvl-chat's answer; the template renders dsvl's deepseek format; pipeline("image-text-to-text") runs."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT, format_conversation
from dsvl.eval.generation import ChatGenerator, GenerationSettings
from dsvl.cli.models import build_model
from dsvl.model import ConfigError
from dsvl.cli.presets import model_config
from dsvl.model.export import deepseek_chat_template, export_pretrained, exported_system_prompt

CONVERSATIONS = [
    [{"role": "user", "content": "<image_placeholder>What color is the shape?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "<image_placeholder><image_placeholder>Compare."}],
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from dsvl.data.demo import train_tokenizer

    texts = ["What color is the shape? A red square on a blue background. Compare the images. Hello."] * 4
    return AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=300))


@pytest.fixture(scope="module")
def demo_like_export(tokenizer, tmp_path_factory):
    """The demo's export in small: the tiny hybrid preset trained without a system prompt."""
    cfg = model_config("tiny")
    cfg["image_token_id"] = tokenizer.convert_tokens_to_ids("<image_placeholder>")
    torch.manual_seed(3)
    model = build_model(cfg).eval()
    out = export_pretrained(model, tmp_path_factory.mktemp("export"), tokenizer, system_prompt=None)
    return model, out


@pytest.mark.parametrize("system", [DEFAULT_SYSTEM_PROMPT, None])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_chat_template_renders_the_deepseek_format(system, conversation) -> None:
    from transformers.utils.chat_template_utils import render_jinja_template

    eos = "<｜end▁of▁sentence｜>"
    structured = [{**m, "content": [{"type": "image"}] * m["content"].count("<image_placeholder>")
                   + [{"type": "text", "text": m["content"].replace("<image_placeholder>", "")}]} if m["role"] == "user" else m
                  for m in conversation]
    for messages in (conversation, structured):
        rendered, _ = render_jinja_template([messages], chat_template=deepseek_chat_template(system, eos), add_generation_prompt=True)
        assert rendered[0] == format_conversation(conversation, system, add_generation_prompt=True, eos_token=eos)


def test_demo_like_export_runs_in_transformers_as_dsvl_chat(demo_like_export, tokenizer) -> None:
    model, out = demo_like_export
    assert json.loads((out / "processor_config.json").read_text())["num_image_tokens"] == model.num_image_tokens == 16
    assert exported_system_prompt(out, DEFAULT_SYSTEM_PROMPT) is None
    processor = AutoProcessor.from_pretrained(out)
    hf = AutoModelForImageTextToText.from_pretrained(out).eval()
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (20, 50), (10, 200, 90))]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=images, return_tensors="pt")
    new = hf.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()

    generator = ChatGenerator(model, tokenizer, system_prompt=None)
    batch = generator.build_batch([[{"role": "user", "content": "<image_placeholder><image_placeholder>Compare."}]], [images])
    assert batch["input_ids"].tolist() == inputs["input_ids"].tolist()
    ours = generator.generate_ids(batch, GenerationSettings(max_new_tokens=8))[0]
    assert new[: len(ours)] == ours and len(set(ours)) > 1

    pipe = pipeline("image-text-to-text", model=str(out), device="cpu")
    with_images = [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "image", "image": images[1]},
                                                {"type": "text", "text": "Compare."}]}]
    result = pipe(text=with_images, max_new_tokens=8, do_sample=False, return_full_text=False)
    assert result[0]["generated_text"].strip() == generator.decode(ours)


def test_export_refuses_a_tokenizer_without_the_image_token(tokenizer, tmp_path) -> None:
    cfg = model_config("tiny")
    cfg["image_token_id"] = 5
    with pytest.raises(ConfigError, match="image_token_id is 5"):
        export_pretrained(build_model(cfg), tmp_path / "x", tokenizer)
    assert not (tmp_path / "x").exists()
