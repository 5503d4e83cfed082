"""Raw webdataset sample -> `Encoded` (token ids, labels, image tensors), or `BadSample`.

A sample's bytes are untrusted: every way they can fail while parsing, tokenizing or decoding is
a `BadSample` with its reason (a counted skip), never an exception that ends a run.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import IMAGE_TOKEN, ConversationError
from dsvl.data.images import ImagePreprocessor
from dsvl.data.schema import Sample, caption_to_raw, parse_sample
from dsvl.data.tokenize import IGNORE_INDEX, Encoded, TextEncoder
from dsvl.errors import DataError

SOURCE_FORMATS = ("dsvl", "caption")  # shard layouts a source can name (`format:` in a data config)
# what a tokenizer can raise on strange text (lone surrogates, NUL bytes, absurd lengths...)
_TOKENIZE_ERRORS = (ValueError, TypeError, KeyError, IndexError, UnicodeError, OverflowError, RecursionError)


class SampleEncoder:
    """Parses, validates, tokenizes and preprocesses one raw sample for a given stream modality
    and shard format (`dsvl` shards, or `caption`: img2dataset tars read directly)."""

    def __init__(self, text: TextEncoder, images: ImagePreprocessor | None, max_length: int,
                 modality: str | None = None, fmt: str = "dsvl") -> None:
        if fmt not in SOURCE_FORMATS:
            raise DataError(f"data source format must be one of {SOURCE_FORMATS}, got {fmt!r}")
        self.text, self.images, self.max_length, self.modality, self.fmt = text, images, int(max_length), modality, fmt

    def for_modality(self, modality: str) -> "SampleEncoder":
        return SampleEncoder(self.text, self.images, self.max_length, modality, self.fmt)

    def for_format(self, fmt: str) -> "SampleEncoder":
        return SampleEncoder(self.text, self.images, self.max_length, self.modality, fmt)

    @cached_property
    def max_chars(self) -> int:
        """No text longer than this many characters (placeholders aside) can fit in `max_length`
        tokens: every token covers at most as many characters as the vocabulary's longest token.
        Longer texts are rejected before they are tokenized."""
        vocab = self.text.tokenizer.get_vocab()
        return self.max_length * max((len(t) for t in vocab), default=1)

    def tokenize(self, sample: Sample) -> Encoded:
        """Token ids and labels of a parsed sample (its images not needed), or `BadSample`."""
        parts = [sample.text] if sample.text is not None else [m["content"] for m in sample.conversation or []]
        chars = sum(len(p) for p in parts) - sample.num_placeholders * len(IMAGE_TOKEN)
        if chars > self.max_chars:
            raise BadSample(SkipReason.TOO_LONG, f"{chars} characters cannot fit in max_length {self.max_length}", sample.key)
        try:
            return (self.text.encode_text(sample.text) if sample.text is not None
                    else self.text.encode_conversation(sample.conversation or []))
        except ConversationError as e:
            raise BadSample(SkipReason.BAD_CONVERSATION, str(e), sample.key) from None
        except _TOKENIZE_ERRORS as e:
            raise BadSample(SkipReason.BAD_JSON, f"text does not tokenize: {type(e).__name__}: {str(e)[:200]}",
                            sample.key) from None

    def __call__(self, raw: dict[str, Any]) -> Encoded:
        if self.fmt == "caption":
            raw = caption_to_raw(raw)
        sample = parse_sample(raw, decode_images=False)
        key = sample.key
        if self.modality is not None and sample.modality != self.modality:
            raise BadSample(SkipReason.UNKNOWN_MODALITY, f"{sample.modality!r} sample in a {self.modality!r} source", key)
        enc = self.tokenize(sample)
        if len(enc) > self.max_length:
            raise BadSample(SkipReason.TOO_LONG, f"{len(enc)} tokens > max_length {self.max_length}", key)
        if all(l == IGNORE_INDEX for l in enc.labels[1:]):
            raise BadSample(SkipReason.EMPTY_TEXT, "no supervised tokens", key)
        if sample.num_placeholders:
            max_side = self.images.inputs[0].size if self.images is not None else None
            sample = parse_sample(raw, decode_images=True, max_side=max_side)  # decode only what survived the cheap checks
            if self.images is not None:  # None: validation only (images decoded, not preprocessed)
                enc.pixels = self.images(sample.images)
        enc.key, enc.modality = key, sample.modality
        return enc
