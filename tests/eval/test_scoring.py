"""Option NLLs of one batched forward pass against a hand computation, letter mode, metric on a tiny model."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT, IMAGE_TOKEN
from dsvl.data.demo import generate_samples
from dsvl.data.images import ImagePreprocessor
from dsvl.data.multiple_choice import (
    LETTERS,
    MultipleChoiceCollator,
    lettered_conversation,
    mc_sample_from_json,
    parse_mc_sample,
)
from dsvl.data.bad_samples import BadSample
from dsvl.data.tokenize import TextEncoder
from dsvl.eval import MultipleChoiceAccuracy, score_options


@pytest.fixture(scope="module")
def samples() -> list[Any]:
    """Two demo MC questions with an image, one text-only question with 3 options."""
    out = [parse_mc_sample({**raw, "json": __import__("json").dumps(raw["json"])})
           for raw in generate_samples("mc", "val", 2, seed=0)]
    out.append(mc_sample_from_json(
        {"modality": "text", "category": "arithmetic",
         "conversation": [{"role": "user", "content": "What is one plus two?"}],
         "options": ["three", "four", "two"], "answer": 0}, key="text_q"))
    return out


def hand_option_nll(model: Any, tokenizer: Any, conversation: list[dict[str, str]], option: str, images: list[Any]) -> float:
    """Mean NLL of the option's tokens: one unpadded sequence per option, a manual loop over its tokens."""
    enc = TextEncoder(tokenizer, model.vision_spec.num_image_tokens, system_prompt=DEFAULT_SYSTEM_PROMPT)
    prompt = enc.encode_conversation(conversation, add_generation_prompt=True).input_ids
    option_ids = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + option_ids])
    pixels = ImagePreprocessor(model.vision_spec)(images) if images else {}
    with torch.no_grad():
        logits = model(input_ids=ids, **pixels).logits[0]
    total = 0.0
    for i, tok in enumerate(option_ids):
        pos = len(prompt) + i
        total -= torch.log_softmax(logits[pos - 1].double(), dim=-1)[tok].item()
    return total / len(option_ids)


def test_option_nll_matches_hand_computation(tiny_model: Any, tokenizer: Any, samples: list[Any]) -> None:
    batch = MultipleChoiceCollator(tokenizer, tiny_model.vision_spec, mode="text")(samples)
    assert batch["input_ids"].shape[0] == 4 + 4 + 3  # one row per (question, option)
    assert batch["pixel_values"].shape[0] == 8 and batch["high_res_pixel_values"].shape[0] == 8
    scores = score_options(tiny_model, batch)
    assert scores.shape == (3, 4) and torch.isinf(scores[2, 3])
    for s, sample in enumerate(samples):
        for o, option in enumerate(sample.options):
            want = hand_option_nll(tiny_model, tokenizer, sample.conversation, option, sample.images)
            assert scores[s, o].item() == pytest.approx(want, rel=1e-4, abs=1e-5)
    metric = MultipleChoiceAccuracy()
    metric.update(scores, batch["answer"], batch["categories"], batch["keys"])
    hand = [int(scores[i, : len(s.options)].argmin()) == s.answer for i, s in enumerate(samples)]
    assert metric.compute().item() == pytest.approx(sum(hand) / 3)
    per_cat = metric.summary()["per_category"]
    assert per_cat["arithmetic"] == {"accuracy": float(hand[2]), "num_samples": 1}
    assert sum(c["num_samples"] for c in per_cat.values()) == 3


def test_letter_mode_scores_letters(tiny_model: Any, tokenizer: Any, samples: list[Any]) -> None:
    sample = samples[0]
    conv = lettered_conversation(sample)
    for i, opt in enumerate(sample.options):
        assert f"\n{LETTERS[i]}. {opt}" in conv[-1]["content"]
    assert conv[-1]["content"].startswith(IMAGE_TOKEN) and sample.conversation[-1]["content"] in conv[-1]["content"]
    batch = MultipleChoiceCollator(tokenizer, tiny_model.vision_spec, mode="letter")(samples)
    assert batch["mc_mode"] == "letter"
    scored = [batch["input_ids"][r][batch["labels"][r] != -100].tolist() for r in range(4)]
    assert scored == [tokenizer(" " + LETTERS[i], add_special_tokens=False)["input_ids"] for i in range(4)]
    scores = score_options(tiny_model, batch)
    for o in range(4):
        want = hand_option_nll(tiny_model, tokenizer, conv, LETTERS[o], sample.images)
        assert scores[0, o].item() == pytest.approx(want, rel=1e-4, abs=1e-5)
    metric = MultipleChoiceAccuracy(mode="letter")
    metric.update(scores, batch["answer"], batch["categories"], batch["keys"])
    assert metric.summary()["mode"] == "letter" and metric.summary()["num_samples"] == 3


def test_multi_turn_question_scores_only_the_final_answer(tokenizer: Any) -> None:
    sample = mc_sample_from_json({"modality": "text", "conversation": [
        {"role": "user", "content": "What is one plus one?"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": "And one plus two?"}], "options": ["three", "four"], "answer": 0}, key="multi")
    rows = MultipleChoiceCollator(tokenizer, None, mode="text", system_prompt=None).encode_rows(sample)
    for (ids, labels), option in zip(rows, sample.options):
        option_ids = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
        assert [l for l in labels if l != -100] == option_ids and ids[-len(option_ids):] == option_ids


def test_bad_mc_samples_are_rejected_with_reason() -> None:
    base = {"modality": "text", "conversation": [{"role": "user", "content": "q?"}], "options": ["a", "b"], "answer": 1}
    assert mc_sample_from_json({**base, "answer": "B"}).answer == 1
    for change, reason in (({"answer": 2}, "bad_json"), ({"options": ["a"]}, "missing_field"),
                           ({"conversation": [{"role": "user", "content": f"{IMAGE_TOKEN}q?"}]}, "placeholder_mismatch"),
                           ({"conversation": [{"role": "assistant", "content": "q?"}]}, "bad_conversation")):
        with pytest.raises(BadSample) as err:
            mc_sample_from_json({**base, **change}, key="k")
        assert err.value.reason.value == reason


def test_mc_batches_split_ranks_disjointly(tokenizer: Any, tiny_model: Any, tmp_path: Any) -> None:
    from dsvl.data.multiple_choice import MultipleChoiceBatches
    from dsvl.data.shards import write_shards

    write_shards(generate_samples("mc", "val", 7, seed=0), tmp_path, prefix="mc", max_count=3)
    collate = MultipleChoiceCollator(tokenizer, tiny_model.vision_spec)
    parts = [[k for b in MultipleChoiceBatches(str(tmp_path), collate, batch_size=2, rank=r, world_size=2) for k in b["keys"]]
             for r in range(2)]
    assert len(parts[0]) == 4 and len(parts[1]) == 3 and not set(parts[0]) & set(parts[1])
    from dsvl.data.bad_samples import SkipCounter

    counter = SkipCounter()
    short = MultipleChoiceCollator(tokenizer, tiny_model.vision_spec, max_length=20)
    assert list(MultipleChoiceBatches(str(tmp_path), short, counter=counter)) == []
    assert counter.as_dict() == {"too_long": 7}  # skipped and counted, never fatal
    limited = list(MultipleChoiceBatches(str(tmp_path), collate, batch_size=4, limit=5))
    assert [len(b["keys"]) for b in limited] == [4, 1]
    assert limited[0]["input_ids"].shape[0] == 16 and limited[0]["pixel_values"].shape[0] == 16
