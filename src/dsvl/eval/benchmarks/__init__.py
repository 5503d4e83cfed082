"""Public benchmarks in the layouts users download, scored as the common toolkits do (docs/benchmarks.md):
a reader module per layout, `BenchmarkSpec` one configured benchmark, `run_benchmark` one rank's
records and skips, `summarize` the report."""
from dsvl.eval.benchmarks.base import Question
from dsvl.eval.benchmarks.results import Record, summarize
from dsvl.eval.benchmarks.run import BenchmarkSpec, run_benchmark

__all__ = ["Question", "Record", "summarize", "BenchmarkSpec", "run_benchmark"]
