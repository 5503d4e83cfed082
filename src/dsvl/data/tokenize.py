"""Text -> token ids and labels as DeepSeek-VL makes them: a leading BOS, each ``<image_placeholder>``
expanded to `num_image_tokens` copies of its own id, labels -100 outside the supervised part
(``supervise``: "all" text tokens, stages 1-2, or "assistant" answers, stage 3; docs/data_format.md).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT, IMAGE_TOKEN, Segment, conversation_segments
from dsvl.errors import DataError

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
Supervise = Literal["all", "assistant"]


@dataclass
class Encoded:
    """One tokenized sample (python lists: cheap to pack and to send between worker processes)."""

    input_ids: list[int]
    labels: list[int]
    num_images: int = 0
    key: str = ""
    modality: str = "text"
    pixels: dict[str, Any] = field(default_factory=dict)  # input name -> (num_images, 3, S, S) tensor

    def __len__(self) -> int:
        return len(self.input_ids)


class TextEncoder:
    """Wraps a transformers tokenizer with DeepSeek-VL's BOS, placeholder and label conventions."""

    def __init__(self, tokenizer: Any, num_image_tokens: int, supervise: Supervise = "all",
                 system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> None:
        if supervise not in ("all", "assistant"):
            raise DataError(f"supervise must be 'all' or 'assistant', got {supervise!r}")
        self.tokenizer = tokenizer
        self.num_image_tokens = int(num_image_tokens)
        self.supervise = supervise
        self.system_prompt = system_prompt
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == getattr(tokenizer, "unk_token_id", None):
            raise DataError(f"tokenizer has no image placeholder token {IMAGE_TOKEN!r}; add it as a special token")
        self.bos_id = self._special_id("bos_token")
        self.eos_id = self._special_id("eos_token")
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else self.eos_id

    def _special_id(self, attr: str) -> int:
        tid = getattr(self.tokenizer, f"{attr}_id", None)
        if tid is None:
            raise DataError(f"tokenizer has no {attr}; DeepSeek-VL needs bos and eos tokens")
        return int(tid)

    def _pieces(self, text: str) -> list[int | None]:
        """Token ids of `text` with None where each image goes."""
        out: list[int | None] = []
        for i, part in enumerate(text.split(IMAGE_TOKEN)):
            if i:
                out.append(None)
            if part:
                out.extend(self.tokenizer(part, add_special_tokens=False)["input_ids"])
        return out

    def encode_segments(self, segments: Sequence[Segment], supervise: Supervise | None = None) -> Encoded:
        """BOS + segments; image placeholders expanded; labels per `supervise` (default `self.supervise`)."""
        ids = [self.bos_id]
        labels = [IGNORE_INDEX]
        n_img = 0
        for seg in segments:
            keep = (supervise or self.supervise) == "all" or seg.supervised
            for tok in self._pieces(seg.text):
                if tok is None:
                    n_img += 1
                    ids.extend([self.image_token_id] * self.num_image_tokens)
                    labels.extend([IGNORE_INDEX] * self.num_image_tokens)
                else:
                    ids.append(tok)
                    labels.append(tok if keep and tok != self.image_token_id else IGNORE_INDEX)
            if seg.eos:
                ids.append(self.eos_id)
                labels.append(self.eos_id if keep else IGNORE_INDEX)
        return Encoded(ids, labels, n_img)

    def encode_text(self, text: str) -> Encoded:
        """A pretraining document: BOS text [EOS], every text token supervised (stages 1-2)."""
        return self.encode_segments([Segment(text, supervised=True, eos=True)])

    def encode_conversation(self, conversation: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> Encoded:
        """A chat sample rendered with the deepseek template."""
        return self.encode_segments(conversation_segments(conversation, self.system_prompt, add_generation_prompt))

    def encode_answer(self, conversation: Sequence[Mapping[str, str]], answer: str, add_eos: bool = False) -> Encoded:
        """Prompt + one candidate answer with labels on the answer only (multiple-choice PPL scoring):
        the same tokens training sees for ``{"role": "assistant", "content": answer}``, EOS optional."""
        segments = conversation_segments(list(conversation) + [{"role": "assistant", "content": answer}],
                                         self.system_prompt)
        segments[-1] = Segment(segments[-1].text, supervised=True, eos=add_eos)
        return self.encode_segments(segments, "assistant")
