"""Public benchmarks in the layouts users download, scored as the common toolkits do (docs/benchmarks.md).

- readers (one module per layout): `mmbench` (TSV, base64 images, circular copies; also
  MMBench-CN), `seed` (JSON + image root), `pope` (JSONL + image root), `mmmu` (parquet, `<image N>`
  tags), `hellaswag`, `mmlu` (parquet / JSONL / headerless CSV), `text_ppl` (JSONL / parquet text);
  each yields `Question`s, or `BadSample`s for rows that are counted and skipped;
- `BenchmarkSpec`: one configured benchmark (path, images, mode, limit, ...);
- `run_benchmark(model, tokenizer, spec, system_prompt, rank, world_size)`: one rank's `Record`s
  and skips; `summarize(records, skips)`: the report (accuracy, per category, POPE metrics, ppl).
"""
from dsvl.eval.benchmarks.base import BenchSkip, Question
from dsvl.eval.benchmarks.results import Record, summarize
from dsvl.eval.benchmarks.run import MODES, READERS, BenchmarkScorer, BenchmarkSpec, run_benchmark

__all__ = ["BenchSkip", "Question", "Record", "summarize", "MODES", "READERS", "BenchmarkScorer", "BenchmarkSpec",
           "run_benchmark"]
