"""dsvl.eval: validation metrics, option scoring, generation and run plots.

- `MultipleChoiceAccuracy(mode="text"|"letter")`: update(option_nll, answer, categories, keys);
  compute() -> accuracy (what Lightning logs as `val/mc_acc`); summary() -> overall + per category.
- `TextPerplexity` (`val/text_ppl`), `MultimodalLoss` (`val/mm_loss`): update(loss, num_tokens)
  with `VLMOutput.loss` / `.num_loss_tokens`.
- `score_options(model, mc_batch) -> (B, K)` mean option NLLs in one forward pass;
  `sequence_nll(logits, labels) -> (sum, count)` per row.
- `ChatGenerator`, `GenerationSettings`: batched, left-padded, multi-image chat generation.
- `evaluate_benchmark(model, tokenizer, BenchmarkSpec, system_prompt)`: a public benchmark file
  (MMBench, SEED, POPE, MMMU, HellaSwag, MMLU, a text corpus; `dsvl.eval.benchmarks`) -> report.
- `evaluate_mc(model, tokenizer, shards, mode, ...)`, `evaluate_text(model, tokenizer, shards, ...)`:
  whole evaluation sets -> report dicts (what `dsvl-eval` runs); `format_table(report)`.
- `plot_run(run_dir, output=None) -> Path`: training curves PNG from the CSV logger.

Names load lazily, so `dsvl.eval.plots` (matplotlib only) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MultipleChoiceAccuracy": "dsvl.eval.metrics",
    "MultipleChoiceResult": "dsvl.eval.metrics",
    "MultimodalLoss": "dsvl.eval.metrics",
    "TextPerplexity": "dsvl.eval.metrics",
    "forward_inputs": "dsvl.eval.scoring",
    "score_options": "dsvl.eval.scoring",
    "sequence_nll": "dsvl.eval.scoring",
    "ChatGenerator": "dsvl.eval.generation",
    "GenerationSettings": "dsvl.eval.generation",
    "plot_run": "dsvl.eval.plots",
    "EvalError": "dsvl.eval.evaluate",
    "evaluate_benchmark": "dsvl.eval.evaluate",
    "evaluate_mc": "dsvl.eval.evaluate",
    "evaluate_text": "dsvl.eval.evaluate",
    "format_table": "dsvl.eval.evaluate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsvl.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
