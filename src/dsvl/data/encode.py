"""Raw webdataset sample -> `Encoded` (token ids, labels, image tensors), or `BadSample`."""
from __future__ import annotations

from typing import Any

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import ConversationError
from dsvl.data.images import ImagePreprocessor
from dsvl.data.schema import parse_sample
from dsvl.data.tokenize import IGNORE_INDEX, Encoded, TextEncoder


class SampleEncoder:
    """Parses, validates, tokenizes and preprocesses one raw sample for a given stream modality."""

    def __init__(self, text: TextEncoder, images: ImagePreprocessor | None, max_length: int,
                 modality: str | None = None) -> None:
        self.text, self.images, self.max_length, self.modality = text, images, int(max_length), modality

    def for_modality(self, modality: str) -> "SampleEncoder":
        return SampleEncoder(self.text, self.images, self.max_length, modality)

    def __call__(self, raw: dict[str, Any]) -> Encoded:
        sample = parse_sample(raw, decode_images=False)
        key = sample.key
        if self.modality is not None and sample.modality != self.modality:
            raise BadSample(SkipReason.UNKNOWN_MODALITY, f"{sample.modality!r} sample in a {self.modality!r} source", key)
        try:
            enc = (self.text.encode_text(sample.text) if sample.text is not None
                   else self.text.encode_conversation(sample.conversation or []))
        except ConversationError as e:
            raise BadSample(SkipReason.BAD_CONVERSATION, str(e), key) from None
        if len(enc) > self.max_length:
            raise BadSample(SkipReason.TOO_LONG, f"{len(enc)} tokens > max_length {self.max_length}", key)
        if all(l == IGNORE_INDEX for l in enc.labels[1:]):
            raise BadSample(SkipReason.EMPTY_TEXT, "no supervised tokens", key)
        if sample.num_placeholders:
            sample = parse_sample(raw, decode_images=True)  # decode only what survived the cheap checks
            if self.images is not None:  # None: validation only (images decoded, not preprocessed)
                enc.pixels = self.images(sample.images)
        enc.key, enc.modality = key, sample.modality
        return enc
