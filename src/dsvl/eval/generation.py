"""Chat generation on top of `VisionLanguageModel.generate`: batched, left padded, multi-image.

Prompts go through the data pipeline's `TextEncoder`, so generation sees exactly the token layout
training used; rows are left padded so every row's next token comes from the last column (what HF
generate with a KV cache expects). Decoding stops at `<｜end▁of▁sentence｜>`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT, IMAGE_TOKEN
from dsvl.data.images import ImagePreprocessor
from dsvl.data.tokenize import TextEncoder
from dsvl.eval.scoring import to_model_device

log = logging.getLogger(__name__)

Conversation = Sequence[Mapping[str, str]]
ImageLike = Image.Image | str | Path


@dataclass
class GenerationSettings:
    """Decoding options passed to HF generate; greedy by default (DeepSeek-VL paper: greedy for evaluation)."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    use_cache: bool = True
    seed: int | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        """Only the options that apply, so HF does not warn about sampling flags under greedy."""
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "use_cache": self.use_cache}
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kw


def load_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path or image; a clear `ValueError` for missing or unreadable files."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.exists() or path.is_dir():
        raise ValueError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def user_turn(question: str, num_images: int) -> dict[str, str]:
    """A user message; images without placeholders in the text go first, one placeholder each."""
    present = question.count(IMAGE_TOKEN)
    if present and present != num_images:
        raise ValueError(f"the question has {present} {IMAGE_TOKEN} but {num_images} images were given")
    if not present:
        question = IMAGE_TOKEN * num_images + question
    return {"role": "user", "content": question}


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask) with rows right-aligned, pads on the left."""
    ids = [torch.tensor(list(row), dtype=torch.long) for row in rows]
    mask = [torch.ones_like(row) for row in ids]
    return (pad_sequence(ids, batch_first=True, padding_value=pad_id, padding_side="left"),
            pad_sequence(mask, batch_first=True, padding_side="left"))


class ChatGenerator:
    """Answers conversations with a `VisionLanguageModel` (anything with `.vision_spec` and `.generate`)."""

    def __init__(self, model: nn.Module, tokenizer: Any, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> None:
        self.model = model
        self.tokenizer = tokenizer
        spec = model.vision_spec
        self.encoder = TextEncoder(tokenizer, spec.num_image_tokens, supervise="assistant", system_prompt=system_prompt)
        self.images = ImagePreprocessor(spec) if spec.inputs else None

    def build_batch(self, conversations: Sequence[Conversation], images: Sequence[Sequence[ImageLike]] | None = None) -> dict[str, Tensor]:
        """Left-padded generation batch: prompts end with "Assistant:"; images in order of appearance."""
        images = images if images is not None else [[] for _ in conversations]
        if len(images) != len(conversations):
            raise ValueError(f"{len(images)} image lists for {len(conversations)} conversations")
        rows: list[list[int]] = []
        pixels: dict[str, list[Tensor]] = {}
        for conv, imgs in zip(conversations, images):
            enc = self.encoder.encode_conversation(conv, add_generation_prompt=True)
            if enc.num_images != len(imgs):
                raise ValueError(f"a prompt has {enc.num_images} {IMAGE_TOKEN} but {len(imgs)} images")
            rows.append(enc.input_ids)
            if imgs:
                if self.images is None:
                    raise ValueError("this model has no vision tower: it cannot take images")
                for name, t in self.images([load_image(i) for i in imgs]).items():
                    pixels.setdefault(name, []).append(t)
        input_ids, attention_mask = left_pad(rows, self.encoder.pad_id)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        batch.update({name: torch.cat(t) for name, t in pixels.items()})
        return batch

    @torch.no_grad()
    def generate_ids(self, batch: Mapping[str, Tensor], settings: GenerationSettings | None = None) -> list[list[int]]:
        """New token ids per row, cut before the first end-of-sentence token."""
        settings = settings or GenerationSettings()
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        inputs = to_model_device(batch, self.model)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(**inputs, eos_token_id=self.encoder.eos_id, pad_token_id=self.encoder.pad_id,
                                      **settings.generate_kwargs())
        finally:
            self.model.train(was_training)
        eos = self.encoder.eos_id
        return [row[:row.index(eos)] if eos in row else row for row in out.tolist()]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def generate(self, conversations: Sequence[Conversation], images: Sequence[Sequence[ImageLike]] | None = None,
                 settings: GenerationSettings | None = None) -> list[str]:
        """The assistant's next answer for each conversation (one batched generate call)."""
        return [self.decode(ids) for ids in self.generate_ids(self.build_batch(conversations, images), settings)]
