"""dsvl.eval: validation metrics (`metrics`), option scoring (`scoring`), chat generation
(`generation`), evaluation sets and public benchmarks (`evaluate`, `benchmarks`) and run plots
(`plots`). Names load lazily, so `dsvl.eval.plots` (matplotlib only) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MultipleChoiceAccuracy": "dsvl.eval.metrics",
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
