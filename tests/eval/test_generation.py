"""Generation: KV cache equals a no-cache greedy loop, batched (left padded) equals one-by-one, EOS stops."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from PIL import Image

from dsvl.data.chat import IMAGE_TOKEN
from dsvl.eval.generation import ChatGenerator, GenerationSettings, left_pad, user_turn

STEPS = 6


@pytest.fixture(scope="module")
def prompts() -> tuple[list[list[dict[str, str]]], list[list[Image.Image]]]:
    """Three prompts of different lengths with 0, 1 and 2 images (so the batch needs left padding)."""
    red = Image.new("RGB", (40, 60), (220, 40, 40))
    blue = Image.new("RGB", (64, 64), (40, 80, 220))
    convs = [[user_turn("How many corners does a square have?", 0)],
             [user_turn("What color is the shape?", 1)],
             [{"role": "user", "content": f"{IMAGE_TOKEN}first, {IMAGE_TOKEN}second: which one is red, the first or the second?"}]]
    return convs, [[], [red], [red, blue]]


def greedy_without_cache(model: Any, batch: dict[str, torch.Tensor], steps: int) -> list[int]:
    """Reference: each step re-runs the LLM over the whole sequence (no KV cache) on one unpadded row;
    the image-filled prompt embeddings are computed once (the towers do not change between steps)."""
    pixels = {k: v for k, v in batch.items() if "pixel" in k}
    new: list[int] = []
    with torch.no_grad():
        embeds = model.embed_inputs(batch["input_ids"], **pixels)
        table = model.llm.get_input_embeddings()
        for _ in range(steps):
            logits = model.llm(inputs_embeds=embeds, use_cache=False).logits
            token = logits[:, -1].argmax(-1)
            new.append(int(token))
            embeds = torch.cat([embeds, table(token)[:, None]], dim=1)
    return new


def test_cache_equals_no_cache(tiny_model: Any, tokenizer: Any, prompts: Any) -> None:
    gen = ChatGenerator(tiny_model, tokenizer)
    settings = GenerationSettings(max_new_tokens=STEPS)
    eos = gen.encoder.eos_id
    for conv, imgs in zip(*prompts):
        batch = gen.build_batch([conv], [imgs])
        cached = gen.generate_ids(batch, settings)
        reference = greedy_without_cache(tiny_model, batch, STEPS)
        cut = reference.index(eos) if eos in reference else len(reference)
        assert cached == [reference[:cut]]
        # transformers' own no-cache path agrees too
        assert gen.generate_ids(batch, GenerationSettings(max_new_tokens=STEPS, use_cache=False)) == cached


def test_batched_left_padded_equals_one_by_one(tiny_model: Any, tokenizer: Any, prompts: Any) -> None:
    gen = ChatGenerator(tiny_model, tokenizer)
    convs, imgs = prompts
    batch = gen.build_batch(convs, imgs)
    mask = batch["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # left padding
    assert batch["pixel_values"].shape[0] == 3 and batch["high_res_pixel_values"].shape[0] == 3
    settings = GenerationSettings(max_new_tokens=STEPS)
    batched = gen.generate_ids(batch, settings)
    single = [gen.generate_ids(gen.build_batch([c], [i]), settings)[0] for c, i in zip(convs, imgs)]
    assert batched == single
    assert gen.generate(convs, imgs, settings) == [gen.decode(ids) for ids in single]


def test_sampling_is_seeded(tiny_model: Any, tokenizer: Any, prompts: Any) -> None:
    gen = ChatGenerator(tiny_model, tokenizer)
    batch = gen.build_batch(prompts[0][:2], prompts[1][:2])
    settings = GenerationSettings(max_new_tokens=STEPS, do_sample=True, temperature=1.5, top_k=50, seed=7)
    first = gen.generate_ids(batch, settings)
    assert first == gen.generate_ids(batch, settings)
    assert all(0 <= t < len(tokenizer) for row in first for t in row)


def test_stops_at_end_of_sentence(tiny_model: Any, tokenizer: Any, prompts: Any) -> None:
    gen = ChatGenerator(tiny_model, tokenizer)
    batch = gen.build_batch(prompts[0][:1], prompts[1][:1])
    first = gen.generate_ids(batch, GenerationSettings(max_new_tokens=STEPS))[0]
    assert first and gen.encoder.eos_id not in first
    # make the end-of-sentence logit twice the greedy first token's: EOS comes first, generation stops
    model = copy.deepcopy(tiny_model)
    head = model.llm.get_output_embeddings().weight
    with torch.no_grad():
        logits = model(**batch).logits[0, -1]
        assert logits[first[0]] > 0
        head[gen.encoder.eos_id] = 2 * head[first[0]]
    stopper = ChatGenerator(model, tokenizer)
    raw = model.generate(**batch, max_new_tokens=STEPS, do_sample=False, eos_token_id=stopper.encoder.eos_id,
                         pad_token_id=stopper.encoder.pad_id)
    assert raw.shape[1] == 1 and raw[0, 0].item() == stopper.encoder.eos_id
    assert stopper.generate_ids(batch, GenerationSettings(max_new_tokens=STEPS)) == [[]]


def test_prompt_errors(tiny_model: Any, tokenizer: Any) -> None:
    gen = ChatGenerator(tiny_model, tokenizer)
    with pytest.raises(ValueError, match="images"):
        gen.build_batch([[user_turn("hi", 0)]], [[Image.new("RGB", (8, 8))]])
    with pytest.raises(ValueError, match="image not found"):
        gen.generate([[user_turn("hi", 1)]], [["/nonexistent/a.png"]])
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
