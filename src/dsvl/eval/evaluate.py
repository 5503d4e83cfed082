"""Evaluation sets of a loaded model + tokenizer (multiple choice by perplexity, held-out perplexity, a
public benchmark), shared by `dsvl-eval`, the demo and user code; bad samples are counted and skipped.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

import torch
from torch import nn

from dsvl.data.bad_samples import SkipCounter
from dsvl.data.build import shard_urls
from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT
from dsvl.data.collate import batched, collate
from dsvl.data.encode import SampleEncoder
from dsvl.data.images import ImagePreprocessor
from dsvl.data.multiple_choice import MultipleChoiceBatches, MultipleChoiceCollator
from dsvl.data.streams import read_tar
from dsvl.data.tokenize import TextEncoder
from dsvl.errors import UserError
from dsvl.eval.benchmarks import BenchmarkSpec, run_benchmark, summarize
from dsvl.eval.metrics import MultimodalLoss, MultipleChoiceAccuracy, TextPerplexity
from dsvl.eval.scoring import forward_inputs, score_options, to_model_device

__all__ = ["EvalError", "evaluate_benchmark", "evaluate_mc", "evaluate_text", "format_table"]


class EvalError(UserError):
    """A model, tokenizer or data path that cannot be used; the message is one line for the user."""


@torch.no_grad()
def evaluate_mc(model: nn.Module, tokenizer: Any, shards: str | Sequence[str], mode: str = "text", batch_size: int = 8,
                limit: int | None = None, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                max_length: int | None = None) -> dict[str, Any]:
    """Accuracy by option perplexity on MC shards: overall, per category, sample count, skips
    (a question whose longest row exceeds `max_length` tokens is counted as too_long)."""
    urls = shard_urls(shards)
    counter = SkipCounter()
    collate = MultipleChoiceCollator(tokenizer, model.vision_spec, mode=mode, system_prompt=system_prompt, max_length=max_length)
    metric = MultipleChoiceAccuracy(mode=mode)
    for batch in MultipleChoiceBatches(urls, collate, batch_size, limit, counter=counter):
        batch = to_model_device(batch, model)
        metric.update(score_options(model, batch).cpu(), batch["answer"].cpu(), batch["categories"], batch["keys"])
    result = dict(metric.summary())
    result.update(shards=urls, skipped=counter.as_dict())
    return result


@torch.no_grad()
def evaluate_text(model: nn.Module, tokenizer: Any, shards: str | Sequence[str], batch_size: int = 8, max_length: int = 2048,
                  limit: int | None = None, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> dict[str, Any]:
    """Token-mean NLL on held-out shards: perplexity of text samples, loss of multimodal ones."""
    urls = shard_urls(shards)
    counter = SkipCounter()
    spec = model.vision_spec
    text = TextEncoder(tokenizer, spec.num_image_tokens, supervise="all", system_prompt=system_prompt)
    encoder = SampleEncoder(text, ImagePreprocessor(spec) if spec.inputs else None, max_length)
    image_inputs = [(i.name, i.size) for i in spec.inputs]
    metrics = {"text": TextPerplexity(), "multimodal": MultimodalLoss()}
    samples = {"text": 0, "multimodal": 0}
    raws = (raw for url in urls for raw in read_tar(url, counter))
    for encoded in batched(islice(counter.parsed(raws, encoder), limit), batch_size):
        for modality in ("text", "multimodal"):
            group = [e for e in encoded if e.modality == modality]
            if not group:
                continue
            batch = to_model_device(collate(group, text.pad_id, image_inputs), model)
            out = model(**forward_inputs(batch), labels=batch["labels"])
            metrics[modality].update(out.loss.float().cpu(), out.num_loss_tokens.cpu())
            samples[modality] += len(group)
    if not samples["text"] and not samples["multimodal"]:
        raise EvalError(f"no usable samples in {shards} ({counter.summary()})")
    result: dict[str, Any] = {"shards": urls, "skipped": counter.as_dict()}
    if samples["text"]:
        m = metrics["text"]
        result.update(perplexity=float(m.compute()), loss=float(m.mean_value / m.weight),
                      num_tokens=int(m.weight), num_samples=samples["text"])
    if samples["multimodal"]:
        m = metrics["multimodal"]
        result["multimodal"] = {"loss": float(m.compute()), "num_tokens": int(m.weight), "num_samples": samples["multimodal"]}
    return result


def evaluate_benchmark(model: nn.Module, tokenizer: Any, spec: BenchmarkSpec,
                       system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> dict[str, Any]:
    """One public benchmark (`dsvl.eval.benchmarks`) in one process: its report with where it came from."""
    records, skips = run_benchmark(model, tokenizer, spec, system_prompt)
    if not records:
        raise EvalError(f"benchmarks.{spec.name}: no question could be scored in {spec.path} ({skips.summary()})")
    return {"reader": spec.reader, "path": spec.path, "mode": spec.mode, **summarize(records, skips.as_dict())}


BENCH_METRICS = ("accuracy", "row_accuracy", "precision", "recall", "f1", "yes_ratio", "perplexity")


def format_table(report: dict[str, Any]) -> str:
    """The report as an aligned plain-text table (one row per metric)."""
    rows: list[tuple[str, str, str]] = []
    for name, res in report.get("benchmarks", {}).items():
        rows += [(f"{name}/{m}", f"{res[m]:.4f}", str(res["num_samples"])) for m in BENCH_METRICS if m in res]
        for fld, values in res.get("per_category", {}).items():
            rows += [(f"{name}/{fld}/{value}", f"{c['accuracy']:.4f}", str(c["num_samples"])) for value, c in values.items()]
        if res["skipped"]:
            rows.append((f"{name}/skipped", ", ".join(f"{k}={v}" for k, v in res["skipped"].items()), ""))
    for mode, res in report.get("mc", {}).items():
        for cat, c in [("accuracy", res), *res["per_category"].items()]:
            rows.append((f"mc/{mode}/{cat}", f"{c['accuracy']:.4f}", str(c["num_samples"])))
    text = report.get("text") or {}
    for name, res, key in (("text/perplexity", text, "perplexity"), ("multimodal/loss", text.get("multimodal", {}), "loss")):
        if key in res:
            rows.append((name, f"{res[key]:.4f}", str(res["num_samples"])))
    header = ("metric", "value", "samples")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    line = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
    return "\n".join([f"model: {report['model']} ({report['source']})", line(header),
                      "  ".join("-" * w for w in widths), *map(line, rows)])
