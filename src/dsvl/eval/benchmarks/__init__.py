"""Public benchmarks in the layouts users download, scored as the common toolkits do (docs/benchmarks.md).

One reader module per layout yields `Question`s (or counted `BadSample`s); `BenchmarkSpec` is one
configured benchmark; `run_benchmark` gives one rank's `Record`s and skips, `summarize` the report.
"""
from dsvl.eval.benchmarks.base import BenchSkip, Question
from dsvl.eval.benchmarks.results import Record, summarize
from dsvl.eval.benchmarks.run import MODES, READERS, BenchmarkScorer, BenchmarkSpec, run_benchmark

__all__ = ["BenchSkip", "Question", "Record", "summarize", "MODES", "READERS", "BenchmarkScorer", "BenchmarkSpec",
           "run_benchmark"]
