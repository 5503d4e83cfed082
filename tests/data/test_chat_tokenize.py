"""Chat template, BOS, placeholder expansion and label masks, token by token."""
from __future__ import annotations

import pytest

from dsvl.data import (BOS_TOKEN, DEFAULT_SYSTEM_PROMPT, EOS_TOKEN, IGNORE_INDEX, IMAGE_TOKEN, TextEncoder,
                       format_conversation)
from dsvl.data.chat import ConversationError

CONV = [{"role": "user", "content": f"{IMAGE_TOKEN}Describe the image."},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "What color?"}]


def test_template_matches_spec_rendering():
    expected = (f"{DEFAULT_SYSTEM_PROMPT}\n\nUser: {IMAGE_TOKEN}Describe the image.\n\nAssistant: A cat.{EOS_TOKEN}"
                "User: What color?\n\nAssistant:")
    assert format_conversation(CONV, add_generation_prompt=True) == expected
    assert format_conversation(CONV[:1], system_prompt=None, add_generation_prompt=True) == \
        f"User: {IMAGE_TOKEN}Describe the image.\n\nAssistant:"
    sys_conv = [{"role": "system", "content": "Be brief."}] + CONV[:2]
    assert format_conversation(sys_conv).startswith("Be brief.\n\nUser: ")
    with pytest.raises(ConversationError):
        format_conversation([{"role": "bot", "content": "x"}])


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("n_img", [1, 3])
def test_pretrain_text_expansion_and_labels(tokenizer, n_img):
    enc = TextEncoder(tokenizer, num_image_tokens=n_img, supervise="all")
    img = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    bos, eos = tokenizer.convert_tokens_to_ids(BOS_TOKEN), tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    text = f"{IMAGE_TOKEN}two blue squares. {IMAGE_TOKEN}a red circle."
    out = enc.encode_text(text)
    a, b = _ids(tokenizer, "two blue squares. "), _ids(tokenizer, "a red circle.")
    expected = [bos] + [img] * n_img + a + [img] * n_img + b + [eos]
    assert out.input_ids == expected
    assert out.num_images == 2
    exp_labels = [IGNORE_INDEX] + [IGNORE_INDEX] * n_img + a + [IGNORE_INDEX] * n_img + b + [eos]
    assert out.labels == exp_labels
    # the image token is the placeholder's own id, and never supervised
    assert all(l == IGNORE_INDEX for i, l in zip(out.input_ids, out.labels) if i == img)
    # same ids as DeepseekVLProcessor's way: tokenize the whole string (BOS added), expand each placeholder
    whole = tokenizer(text)["input_ids"]
    assert whole[0] == bos
    assert [x for t in whole for x in ([img] * n_img if t == img else [t])] + [eos] == expected


def test_sft_masks_only_assistant_answers_and_eos(tokenizer):
    conv = CONV[:2] + [{"role": "user", "content": "What color?"}, {"role": "assistant", "content": "red"}]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    img = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    sft = TextEncoder(tokenizer, num_image_tokens=2, supervise="assistant", system_prompt=None)
    out = sft.encode_conversation(conv)
    p1, a1 = _ids(tokenizer, "User: "), _ids(tokenizer, "Describe the image.\n\nAssistant:")
    ans1 = _ids(tokenizer, " A cat.")
    p2, ans2 = _ids(tokenizer, "User: What color?\n\nAssistant:"), _ids(tokenizer, " red")
    assert out.input_ids == [bos] + p1 + [img, img] + a1 + ans1 + [eos] + p2 + ans2 + [eos]
    masked = lambda xs: [IGNORE_INDEX] * len(xs)  # noqa: E731
    assert out.labels == ([IGNORE_INDEX] + masked(p1) + masked([img, img]) + masked(a1) + ans1 + [eos]
                          + masked(p2) + ans2 + [eos])
    # stage 1-2 masking of the same conversation: every text token, never images or BOS
    allm = TextEncoder(tokenizer, num_image_tokens=2, supervise="all", system_prompt=None).encode_conversation(conv)
    assert allm.input_ids == out.input_ids
    assert allm.labels == [IGNORE_INDEX if (i == img or k == 0) else i for k, i in enumerate(allm.input_ids)]


def test_generation_prompt_is_the_training_prefix(tokenizer):
    enc = TextEncoder(tokenizer, num_image_tokens=3, supervise="assistant", system_prompt=None)
    conv = [{"role": "user", "content": f"{IMAGE_TOKEN}What color is the shape?"}, {"role": "assistant", "content": "red"}]
    full = enc.encode_conversation(conv)
    prompt = enc.encode_conversation(conv[:1], add_generation_prompt=True)
    assert full.input_ids[: len(prompt)] == prompt.input_ids
    assert all(l == IGNORE_INDEX for l in full.labels[: len(prompt)])


def test_tokenizer_without_placeholder_is_a_clear_error(tokenizer):
    class NoImage:
        bos_token_id, eos_token_id, pad_token_id, unk_token_id, unk_token = 0, 1, 2, None, None

        def convert_tokens_to_ids(self, t):
            return None

    with pytest.raises(ValueError, match="image placeholder"):
        TextEncoder(NoImage(), 4)


def test_encode_answer_scores_only_the_option(tokenizer):
    enc = TextEncoder(tokenizer, num_image_tokens=2, supervise="all", system_prompt=None)
    conv = [{"role": "user", "content": f"{IMAGE_TOKEN}What color is the shape?"}]
    out = enc.encode_answer(conv, "blue")
    prompt = enc.encode_conversation(conv, add_generation_prompt=True)
    option = _ids(tokenizer, " blue")
    assert out.input_ids == prompt.input_ids + option
    assert out.labels == [IGNORE_INDEX] * len(prompt) + option
    assert enc.encode_answer(conv, "blue", add_eos=True).labels[-1] == tokenizer.eos_token_id
    assert enc.supervise == "all"  # restored
