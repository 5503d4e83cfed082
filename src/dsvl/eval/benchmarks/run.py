"""One benchmark on one rank (modes in docs/benchmarks.md): every rank reads the whole file, so all
agree on the order, and scores the question groups that fall to it; `results.summarize` merges them.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsvl.data.bad_samples import BadSample, SkipCounter
from dsvl.data.collate import batched, collate
from dsvl.data.multiple_choice import (
    EncodedMC,
    MultipleChoiceCollator,
    MultipleChoiceSample,
    lettered_conversation,
)
from dsvl.data.tokenize import Encoded, TextEncoder
from dsvl.errors import ConfigError, DataError
from dsvl.eval.generation import ChatGenerator, GenerationSettings
from dsvl.eval.scoring import forward_inputs, score_options, sequence_nll, to_model_device

from .answers import open_answer_matches, parse_letter, parse_yes_no
from .base import BenchSkip, Question, load_image
from .mmbench import read_mmbench
from .mmmu import read_mmmu
from .pope import read_pope
from .results import Record
from .seed import read_seed
from .text_only import read_hellaswag, read_mmlu, read_text_ppl

READERS = {"mmbench": read_mmbench, "seed": read_seed, "pope": read_pope, "mmmu": read_mmmu,
           "hellaswag": read_hellaswag, "mmlu": read_mmlu, "text_ppl": read_text_ppl}
MODES = ("ppl_text", "ppl_letter", "generate")
TEXT_MAX_LENGTH = 1024  # tokens of a text_ppl document that are scored (the rest is cut)
SHORT_ANSWER = "Answer the question using a single word or phrase."


@dataclass
class BenchmarkSpec:
    """One entry of `benchmarks` (dsvl-eval) or `val_benchmarks` (training), checked. `reader` is the
    layout (default: the entry's name); `limit` takes the first N rows; `max_length` skips (counts)
    longer option rows and cuts `text_ppl` documents."""

    name: str
    path: str
    reader: str = ""
    images: str | None = None
    mode: str = "ppl_text"
    limit: int | None = None
    batch_size: int = 8
    max_length: int | None = None
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        where = f"benchmarks.{self.name}"
        for key in ("path", "images", "reader", "mode"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise ConfigError(f"{where}.{key}={getattr(self, key)!r}: expected a string")
        self.reader = self.reader or self.name
        if self.reader not in READERS:
            raise ConfigError(f"{where}.reader: unknown layout {self.reader!r}; accepted: {', '.join(READERS)}")
        if self.mode not in MODES:
            raise ConfigError(f"{where}.mode: unknown mode {self.mode!r}; accepted: {', '.join(MODES)}")
        if self.reader == "text_ppl" and self.mode != "ppl_text":
            raise ConfigError(f"{where}.mode: a text_ppl corpus is scored by perplexity only (mode=ppl_text)")
        for key, low in (("limit", 1), ("batch_size", 1), ("max_length", 2), ("max_new_tokens", 1)):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"{where}.{key}: expected an integer >= {low}, got {value!r}")
        if not Path(self.path).expanduser().exists():
            raise DataError(f"{where}.path: {self.path} does not exist")

    @classmethod
    def from_config(cls, name: str, node: Mapping[str, Any]) -> "BenchmarkSpec":
        """From a plain mapping (a config entry); unknown keys and a missing path are `ConfigError`s."""
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"benchmarks.{name}.{unknown[0]}: unknown key; accepted: {', '.join(sorted(known))}")
        if not node.get("path"):
            raise ConfigError(f"benchmarks.{name}.path: missing (a file or directory of the benchmark)")
        return cls(name=name, **{k: v for k, v in node.items() if v is not None})

    def questions(self) -> Iterator[Question | BadSample]:
        """The first `limit` rows of the benchmark, as questions or counted-skip placeholders."""
        path = Path(self.path).expanduser()
        images = Path(self.images).expanduser() if self.images else None
        return islice(READERS[self.reader](path, images, self.name), self.limit)


def my_share(items: Sequence[Question | BadSample], rank: int, world_size: int) -> tuple[list[Question], SkipCounter]:
    """This rank's questions (whole groups: a question's circular copies stay together) and its
    share of the reader's skips, so that summed over ranks each row counts once."""
    owner: dict[str, int] = {}
    mine: list[Question] = []
    skips = SkipCounter()
    for position, item in enumerate(items):
        if isinstance(item, BadSample):
            if position % world_size == rank:
                skips.add(item.reason, item.key, item.detail)  # type: ignore[arg-type]
            continue
        if owner.setdefault(item.group, len(owner) % world_size) == rank:
            mine.append(item)
    return mine, skips


class BenchmarkScorer:
    """Scores questions of one benchmark with a model + tokenizer, in the benchmark's mode."""

    def __init__(self, model: nn.Module, tokenizer: Any, spec: BenchmarkSpec, system_prompt: str | None) -> None:
        self.model, self.tokenizer, self.spec, self.system_prompt = model, tokenizer, spec, system_prompt
        self.skips = SkipCounter()

    def _decoded(self, questions: Sequence[Question]) -> Iterator[tuple[Question, list[Any]]]:
        """Questions with their images decoded; missing or broken images counted and skipped."""
        return self.skips.parsed(questions, lambda q: (q, [load_image(ref, q.key) for ref in q.images]))

    def score(self, questions: Sequence[Question]) -> list[Record]:
        """Records of the questions this scorer could score (the rest are in `self.skips`)."""
        if self.spec.reader == "text_ppl":
            return self._perplexity(questions)
        if self.spec.mode == "generate":
            return self._generate(questions)
        for q in questions:
            if q.kind == "open":
                self.skips.add(BenchSkip.OPEN_QUESTION, q.key, f"mode {self.spec.mode} needs options")  # type: ignore[arg-type]
        return self._option_ppl([q for q in questions if q.kind != "open"])

    def _option_ppl(self, questions: Sequence[Question]) -> list[Record]:
        collator = MultipleChoiceCollator(self.tokenizer, self.model.vision_spec, mode="letter" if self.spec.mode == "ppl_letter" else "text",
                                          system_prompt=self.system_prompt, max_length=self.spec.max_length)
        encoded: list[tuple[Question, EncodedMC]] = []
        for q, images in self._decoded(questions):
            sample = MultipleChoiceSample(key=q.key, conversation=[{"role": "user", "content": q.text}], options=q.options,
                                          answer=int(q.answer), modality="multimodal" if images else "text", images=images)
            try:
                encoded.append((q, collator.encode(sample)))
            except BadSample as e:
                self.skips.add(e.reason, e.key, e.detail)
        records = []
        for chunk in batched(encoded, self.spec.batch_size):
            batch = to_model_device(collator([enc for _, enc in chunk]), self.model)
            predicted = score_options(self.model, batch).argmin(dim=1).tolist()
            records += [Record(q.group, q.kind, pred == q.answer, pred, q.answer, q.categories) for (q, _), pred in zip(chunk, predicted)]
        return records

    def _prompt(self, q: Question) -> list[dict[str, str]]:
        if q.kind == "mc":
            return lettered_conversation(MultipleChoiceSample(q.key, [{"role": "user", "content": q.text}], q.options, int(q.answer)))
        return [{"role": "user", "content": f"{q.text}\n{SHORT_ANSWER}"}]

    def _generate(self, questions: Sequence[Question]) -> list[Record]:
        generator = ChatGenerator(self.model, self.tokenizer, self.system_prompt)
        settings = GenerationSettings(max_new_tokens=self.spec.max_new_tokens)
        records = []
        for chunk in batched(list(self._decoded(questions)), self.spec.batch_size):
            replies = generator.generate([self._prompt(q) for q, _ in chunk], [images for _, images in chunk], settings)
            for (q, _), reply in zip(chunk, replies):
                if q.kind == "open":
                    right = open_answer_matches(reply, str(q.answer))
                    records.append(Record(q.group, q.kind, right, 0 if right else None, q.answer, q.categories))
                    continue
                pred = parse_yes_no(reply) if q.kind == "yesno" else parse_letter(reply, q.options)
                records.append(Record(q.group, q.kind, pred == q.answer, pred, q.answer, q.categories))
        return records

    def _perplexity(self, questions: Sequence[Question]) -> list[Record]:
        """Token-summed NLL of each document's first `max_length` tokens (BOS text EOS, as pretraining sees text)."""
        text = TextEncoder(self.tokenizer, 0, supervise="all", system_prompt=None)
        limit = self.spec.max_length or TEXT_MAX_LENGTH
        records = []
        for chunk in batched(questions, self.spec.batch_size):
            rows = [text.encode_text(q.text) for q in chunk]
            rows = [Encoded(r.input_ids[:limit], r.labels[:limit]) for r in rows]
            batch = to_model_device(collate(rows, text.pad_id), self.model)
            sums, counts = sequence_nll(self.model(**forward_inputs(batch)).logits, batch["labels"])
            records += [Record(q.group, "text", nll_sum=float(s), num_tokens=int(c)) for q, s, c in zip(chunk, sums.tolist(), counts.tolist())]
        return records


@torch.no_grad()
def run_benchmark(model: nn.Module, tokenizer: Any, spec: BenchmarkSpec, system_prompt: str | None,
                  rank: int = 0, world_size: int = 1,
                  items: Sequence[Question | BadSample] | None = None) -> tuple[list[Record], SkipCounter]:
    """This rank's records and skips (reader skips of its share of rows, and scoring skips); `items`:
    the rows already read (`list(spec.questions())`) by a caller that scores them at every validation."""
    questions, skips = my_share(items if items is not None else list(spec.questions()), rank, world_size)
    scorer = BenchmarkScorer(model, tokenizer, spec, system_prompt)
    records = scorer.score(questions)
    return records, skips.merge(scorer.skips)
