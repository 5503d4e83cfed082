"""Multiple-choice samples (docs/data_format.md) -> PPL scoring batches (DeepSeek-VL paper).

Each option is one row: the question rendered up to ``"Assistant:"`` plus the option as the answer,
labelled on the option's tokens only (not its end of turn), so a row's mean NLL is the option's
score. In "letter" mode the question lists the lettered options and the rows score "A", "B", ...
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Iterator, Literal, Mapping, Sequence

import torch
from PIL import Image
from torch.utils.data import IterableDataset

from dsvl.data.bad_samples import BadSample, SkipCounter, SkipReason
from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT, IMAGE_TOKEN
from dsvl.data.collate import batched, collate
from dsvl.data.images import ImagePreprocessor
from dsvl.data.schema import MODALITIES, check_conversation, decode_image, image_fields, parse_json
from dsvl.data.streams import Part, expand_urls, read_tar
from dsvl.data.tokenize import IGNORE_INDEX, Encoded, TextEncoder
from dsvl.model.spec import VisionSpec

Mode = Literal["text", "letter"]
LETTERS = string.ascii_uppercase
LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class MultipleChoiceSample:
    """One validated MC question; `images` are RGB PIL images in placeholder order."""

    key: str
    conversation: list[dict[str, str]]
    options: list[str]
    answer: int
    category: str = "default"
    modality: str = "text"
    images: list[Image.Image] = field(default_factory=list)


def mc_sample_from_json(meta: Mapping[str, Any], key: str = "", images: Sequence[Image.Image] = ()) -> MultipleChoiceSample:
    """Validate an MC json object (already decoded) with its images; raise `BadSample` on the first problem."""
    conv = check_conversation(meta.get("conversation"), key)
    if conv[-1]["role"] != "user":
        raise BadSample(SkipReason.BAD_CONVERSATION, "an MC conversation must end with the user's question", key)
    options = meta.get("options")
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise BadSample(SkipReason.MISSING_FIELD, "'options' must be a list of at least 2 non-empty strings", key)
    if len(options) > len(LETTERS):
        raise BadSample(SkipReason.BAD_JSON, f"{len(options)} options, at most {len(LETTERS)} supported", key)
    answer = meta.get("answer")
    if isinstance(answer, str) and len(answer) == 1 and answer.upper() in LETTERS:
        answer = LETTERS.index(answer.upper())
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(options):
        raise BadSample(SkipReason.BAD_JSON, f"'answer' must be an option index (or letter), got {answer!r}", key)
    n = sum(m["content"].count(IMAGE_TOKEN) for m in conv)
    if n != len(images):
        raise BadSample(SkipReason.PLACEHOLDER_MISMATCH, f"{n} placeholders, {len(images)} images", key)
    modality = meta.get("modality", "multimodal" if n else "text")
    if modality not in MODALITIES or (modality == "text") != (n == 0):
        raise BadSample(SkipReason.UNKNOWN_MODALITY, f"modality {modality!r} with {n} images", key)
    return MultipleChoiceSample(key, conv, list(options), answer, str(meta.get("category", "default")), modality, list(images))


def parse_mc_sample(raw: Mapping[str, Any]) -> MultipleChoiceSample:
    """A raw webdataset sample (``__key__``, ``json``, ``0.png``...) -> `MultipleChoiceSample` or `BadSample`."""
    key = str(raw.get("__key__", ""))
    meta = parse_json(raw, key)
    fields = image_fields(raw)
    if sorted(fields) != list(range(len(fields))):
        raise BadSample(SkipReason.MISSING_FIELD, f"image fields {sorted(fields.values())} are not 0..{len(fields) - 1}", key)
    images = [decode_image(raw[fields[i]], key, fields[i]) for i in range(len(fields))]
    return mc_sample_from_json(meta, key, images)


def lettered_conversation(sample: MultipleChoiceSample) -> list[dict[str, str]]:
    """The conversation whose last user turn lists the options as "A. ..." lines and asks for a letter."""
    listing = "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(sample.options))
    conv = [dict(m) for m in sample.conversation]
    conv[-1]["content"] = f"{conv[-1]['content']}\n{listing}\n{LETTER_INSTRUCTION}"
    return conv


@dataclass
class EncodedMC:
    """A sample with its (input_ids, labels) row per option and its image tensors (per input name)."""

    sample: MultipleChoiceSample
    rows: list[tuple[list[int], list[int]]]
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)


class MultipleChoiceCollator:
    """Turns MC samples into one batch of (question, option) rows for `dsvl.eval.score_options`: the model
    inputs (right padded; a sample's images once per option row) and the rows' bookkeeping."""

    def __init__(self, tokenizer: Any, vision_spec: VisionSpec | None, mode: Mode = "text",
                 system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, max_length: int | None = None) -> None:
        if mode not in ("text", "letter"):
            raise ValueError(f"mode must be 'text' or 'letter', got {mode!r}")
        self.mode = mode
        self.spec = vision_spec or VisionSpec()
        self.encoder = TextEncoder(tokenizer, self.spec.num_image_tokens, supervise="assistant", system_prompt=system_prompt)
        self.images = ImagePreprocessor(self.spec) if self.spec.inputs else None
        self.max_length = max_length

    def encode_rows(self, sample: MultipleChoiceSample) -> list[tuple[list[int], list[int]]]:
        """(input_ids, labels) per option; labels keep only the option's own tokens (no end of turn).

        `TextEncoder.encode_answer` gives the tokens training sees for the answer; earlier
        assistant turns of a multi-turn question are unmasked there too, so only the final run of
        labels (after the last unscored position, the end of "Assistant:") is kept.
        """
        conversation, answers = sample.conversation, sample.options
        if self.mode == "letter":
            conversation, answers = lettered_conversation(sample), list(LETTERS[:len(sample.options)])
        rows = []
        for answer in answers:
            enc = self.encoder.encode_answer(conversation, answer, add_eos=False)
            last_unscored = max(i for i, label in enumerate(enc.labels) if label == IGNORE_INDEX)
            labels = [IGNORE_INDEX] * (last_unscored + 1) + list(enc.labels[last_unscored + 1:])
            if self.max_length is not None and len(enc.input_ids) > self.max_length:
                raise BadSample(SkipReason.TOO_LONG, f"{len(enc.input_ids)} tokens > max_length {self.max_length}", sample.key)
            rows.append((enc.input_ids, labels))
        return rows

    def encode(self, sample: MultipleChoiceSample) -> EncodedMC:
        """Token rows and image tensors of one sample; `BadSample` when it cannot be scored."""
        rows = self.encode_rows(sample)
        if sample.images and self.images is None:
            raise BadSample(SkipReason.UNKNOWN_MODALITY, "image sample but the model has no vision tower", sample.key)
        return EncodedMC(sample, rows, self.images(sample.images) if self.images and sample.images else {})

    def __call__(self, samples: Sequence[MultipleChoiceSample | EncodedMC]) -> dict[str, Any]:
        if not samples:
            raise ValueError("empty multiple-choice batch")
        encoded = [s if isinstance(s, EncodedMC) else self.encode(s) for s in samples]
        # a sample's images once per option row, in row order
        pixels = {name: torch.cat([e.pixels[name] for e in encoded if name in e.pixels for _ in e.rows])
                  for name in dict.fromkeys(name for e in encoded for name in e.pixels)}
        samples = [enc.sample for enc in encoded]
        padded = collate([Encoded(ids, labels) for e in encoded for ids, labels in e.rows], self.encoder.pad_id)
        return {
            **{k: padded[k] for k in ("input_ids", "attention_mask", "labels")},
            "row_sample": torch.tensor([i for i, e in enumerate(encoded) for _ in e.rows], dtype=torch.long),
            "row_option": torch.tensor([j for e in encoded for j in range(len(e.rows))], dtype=torch.long),
            "answer": torch.tensor([s.answer for s in samples], dtype=torch.long),
            "num_options": torch.tensor([len(s.options) for s in samples], dtype=torch.long),
            "categories": [s.category for s in samples],
            "keys": [s.key for s in samples],
            "modality": "multimodal" if pixels else "text",
            "mc_mode": self.mode,
            **pixels,
        }


class MultipleChoiceBatches(IterableDataset):
    """Scoring batches of MC shards, in shard order, for a validation DataLoader (``batch_size=None``).

    Each (rank, worker) part takes every n-th raw sample, so parts are disjoint; `limit` counts raw
    samples of the whole set, so all ranks agree on it. Bad samples are counted in `counter` and
    skipped. `MultipleChoiceAccuracy` dedupes by key, so a sampler that repeats samples is harmless too.
    """

    def __init__(self, urls: str | Sequence[str], collator: MultipleChoiceCollator, batch_size: int = 8,
                 limit: int | None = None, rank: int = 0, world_size: int = 1,
                 counter: SkipCounter | None = None) -> None:
        super().__init__()
        self.urls = expand_urls(list(urls) if not isinstance(urls, str) else urls)
        if not self.urls:
            raise ValueError(f"no multiple-choice shards at {urls}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.collator, self.batch_size, self.limit = collator, int(batch_size), limit
        self.rank, self.world_size = int(rank), int(world_size)
        self.counter = counter if counter is not None else SkipCounter()

    def samples(self) -> Iterator[EncodedMC]:
        """This part's valid samples, encoded (bad or too long ones counted and skipped)."""
        part = Part.of(self.rank, self.world_size)
        raws = islice((raw for url in self.urls for raw in read_tar(url, self.counter)), self.limit)
        mine = (raw for n, raw in enumerate(raws) if n % part.count == part.index)
        return self.counter.parsed(mine, lambda raw: self.collator.encode(parse_mc_sample(raw)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self.collator, batched(self.samples(), self.batch_size))
