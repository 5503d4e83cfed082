"""dsvl.eval: validation metrics (`metrics`), option scoring (`scoring`), chat generation
(`generation`), evaluation sets and public benchmarks (`evaluate`, `benchmarks`) and run plots
(`plots`). Names load lazily, so `dsvl.eval.plots` (matplotlib only) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {name: f"dsvl.eval.{module}" for module, names in {
    "metrics": ("MultipleChoiceAccuracy", "MultimodalLoss", "TextPerplexity"),
    "scoring": ("forward_inputs", "score_options", "sequence_nll"),
    "generation": ("ChatGenerator", "GenerationSettings"),
    "plots": ("plot_run",),
    "evaluate": ("EvalError", "evaluate_benchmark", "evaluate_mc", "evaluate_text", "format_table"),
}.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsvl.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
