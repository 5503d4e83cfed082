#!/usr/bin/env python
"""Packing and loss-memory benchmarks (issue 13), each a ratio measured in one run.

    python tools/bench_packing.py [--quick]       # or: python tools/bench.py --only packing

- text: real-token fraction of 256-token text rows of the demo's stage 2, the buffered best-fit
  packer vs the greedy stream-order packer on the same samples (goal >= 0.98);
- multimodal: real-token fraction of 4096-token rows whose samples have the demo's multimodal
  lengths with every image grown to 576 tokens (goal >= 0.95);
- step: stage-2 step time of the mid-size model on packed vs unpacked micro-batches (same
  samples/s measure: samples per second, in lockstep);
- loss memory: peak memory of loss + backward for one 4096-token row, vocabulary 102,400, hidden
  2048 (fp32, CPU): full logits (`next_token_loss`) vs the fused head + cross-entropy of
  `chunked_next_token_loss` (and its checkpointed-chunks fallback for non-linear heads), each in a
  fresh process: peak RSS over the RSS after setup (weight, hidden states, labels), so the weight
  and hidden-state gradients count on both sides (goal >= 4x less).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

MM_ROW, MM_IMAGE_TOKENS = 4096, 576


def _sample_lengths(data_dir: Path, tmp: Path, modality: str, n: int) -> tuple[list[tuple[int, int]], int]:
    """(tokens, images) of the first `n` samples of the demo stage-2 stream of one modality, and the demo's tokens per image."""
    from hydra.utils import get_class

    from dsvl.data.bad_samples import SkipCounter
    from dsvl.data.grouped import build_mixtures
    from dsvl.data.streams import Part
    from dsvl.cli.train import accumulation, align_model_to_data, build_datamodule

    cfg = bench.stage2_config(data_dir, tmp / f"lengths_{modality}", packing=False)
    dm = build_datamodule(cfg, accumulation(cfg, 1), get_class(cfg.stage._target_).supervise)
    align_model_to_data(cfg, dm)
    mix = build_mixtures(dm.train_sources, dm.encoder, Part(), dm.seed, dm.shuffle_buffer, SkipCounter())[modality]
    out = []
    for _ in range(n):
        s = mix.pop()
        out.append((len(s), s.num_images))
    return out, dm.encoder.text.num_image_tokens


class _Lengths:
    """A stream of length-only samples (the packer only looks at lengths)."""

    def __init__(self, lengths: list[int]) -> None:
        from dsvl.data.tokenize import Encoded

        self.items = [Encoded([0] * n, [0] * n, key=str(i)) for i, n in enumerate(lengths)]
        self.i = 0

    def peek(self) -> Any:
        return self.items[self.i]

    def pop(self) -> Any:
        self.i += 1
        return self.items[self.i - 1]

    def state_dict(self) -> dict[str, int]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.i = state["i"]


def fill(lengths: list[int], max_length: int, rows: int, micro_batches: int, buffer: int) -> dict[str, float]:
    """Real-token fraction of `micro_batches` micro-batches of `rows` rows (padded to the longest row,
    as the collate does): buffered best fit vs greedy, on the same stream."""
    from dsvl.data.packing import BufferedPacker, pack_rows

    def frac(batches: list[list[list[Any]]]) -> float:
        real = sum(len(s) for b in batches for r in b for s in r)
        padded = sum(len(b) * max(sum(len(s) for s in r) for r in b) for b in batches)
        return real / padded

    packer = BufferedPacker(_Lengths(lengths), max_length, buffer)
    best = [packer.rows(rows) for _ in range(micro_batches)]
    greedy_stream = _Lengths(lengths)
    greedy = [pack_rows(greedy_stream, rows, max_length) for _ in range(micro_batches)]
    samples = sum(len(r) for b in best for r in b)
    return {"best_fit": frac(best), "greedy": frac(greedy), "samples_per_row": samples / (rows * micro_batches),
            "buffer": buffer, "rows": rows, "micro_batches": micro_batches}


def bench_fill(data_dir: Path, tmp: Path, quick: bool, drawn: int = 400) -> dict[str, Any]:
    """Lengths drawn (seeded, with replacement) from the first `drawn` demo samples of each modality."""
    micro = 20 if quick else 100
    rng = random.Random(0)
    text, _ = _sample_lengths(data_dir, tmp, "text", drawn)
    mm, demo_image_tokens = _sample_lengths(data_dir, tmp, "multimodal", drawn)
    text_lengths = [n for n, _ in rng.choices(text, k=8 * 12 * micro + 512)]
    scaled = [n + k * (MM_IMAGE_TOKENS - demo_image_tokens) for n, k in rng.choices(mm, k=4 * 8 * micro + 256)]
    return {"text": {**fill(text_lengths, 256, 8, micro, 256), "max_length": 256, "goal": 0.98},
            "multimodal": {**fill(scaled, MM_ROW, 4, micro, 64), "max_length": MM_ROW, "goal": 0.95,
                           "image_tokens": MM_IMAGE_TOKENS, "mean_sample_tokens": sum(scaled) / len(scaled)}}


def bench_step(data_dir: Path, tmp: Path, quick: bool) -> dict[str, Any]:
    """Mid-size (quick: tiny) stage-2 steps (grouped, 70% text), both modalities packed vs none packed, in lockstep."""
    steps, repeats, warmup = (6, 1, 2) if quick else (20, 2, 3)
    size = "tiny" if quick else "mid"
    out: dict[str, Any] = {"size": size}
    cfgs = {p: bench.stage2_config(data_dir, tmp / f"step_{p}", size=size, packing=p) for p in (True, False)}
    batches = {p: bench.make_batches(cfgs[p], steps)[0] for p in cfgs}
    runs = [bench.lockstep([bench.HandStep(bench.new_stage(cfgs[p])) for p in cfgs], [batches[p] for p in cfgs], warmup)
            for _ in range(repeats)]
    for k, p in enumerate(cfgs):
        seconds = bench.best_of([r[k] for r in runs], 0)
        made = batches[p]
        out["packed" if p else "unpacked"] = {
            "samples_per_s": sum(b["stats"]["samples"] for b in made) / seconds,
            "tokens_per_s": sum(b["stats"]["tokens"] for b in made) / seconds, "step_s": seconds / len(made),
            "pad_fraction": sum(b["stats"]["pad_tokens"] for b in made) / sum(b["input_ids"].numel() for b in made)}
    out["ratio"] = out["packed"]["samples_per_s"] / out["unpacked"]["samples_per_s"]
    return out


LOSS_PROBE = """import json, resource, sys, time, torch
from dsvl.model.vlm import chunked_next_token_loss, next_token_loss
torch.set_num_threads(int(sys.argv[5]))
T, V, H = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)  # the same head weights in every probe process
g = torch.Generator().manual_seed(0)
head = torch.nn.Linear(H, V, bias=False)
hidden = (torch.randn(1, T, H, generator=g) * 0.02).requires_grad_()
labels = torch.randint(0, V, (1, T), generator=g)
if sys.argv[1] == "checkpointed":  # a hooked head is not fused: the checkpointed-chunks path other heads take
    head.register_forward_hook(lambda module, args, out: None)
def rss_kb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024
base = rss_kb()
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[1] == "full":
    loss, _ = next_token_loss(head(hidden), labels)
else:
    loss, _ = chunked_next_token_loss(hidden, head, labels)
loss.backward()
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "loss": float(loss),
                  "seconds": seconds, "cpu_seconds": cpu_seconds, "grad_sum": float(head.weight.grad.double().abs().sum())}))
"""


def bench_loss_memory(tokens: int = 4096, vocab: int = 102_400, hidden: int = 2048, threads: int = 1) -> dict[str, Any]:
    """Peak RSS of loss + backward above the RSS after setup (head weight, hidden states, labels), each
    path in a fresh process. Counted: every tensor the loss and its backward allocate, the head's
    weight gradient (vocab x hidden fp32) and the hidden states' gradient included."""
    out: dict[str, Any] = {"tokens": tokens, "vocab": vocab, "hidden": hidden, "goal": 4.0,
                           "weight_grad_mb": vocab * hidden * 4 / 2**20}
    for kind in ("full", "checkpointed", "fused"):
        proc = subprocess.run([sys.executable, "-c", LOSS_PROBE, kind, str(tokens), str(vocab), str(hidden), str(threads)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"loss memory probe failed: {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out[kind] = {"peak_mb": (r["peak_kb"] - r["base_kb"]) / 1024, "loss": r["loss"], "seconds": r["seconds"],
                     "cpu_seconds": r["cpu_seconds"], "weight_grad_abs_sum": r["grad_sum"]}
    out["ratio"] = out["full"]["peak_mb"] / out["fused"]["peak_mb"]
    out["ratio_checkpointed"] = out["full"]["peak_mb"] / out["checkpointed"]["peak_mb"]
    out["max_abs_loss_diff"] = max(abs(out["full"]["loss"] - out[k]["loss"]) for k in ("checkpointed", "fused"))
    return out


def run(data_dir: Path, tmp: Path, quick: bool = False) -> dict[str, Any]:
    """All sections: {"fill": ..., "step": ..., "loss_memory": ...}."""
    return {"fill": bench_fill(data_dir, tmp, quick), "step": bench_step(data_dir, tmp, quick),
            "loss_memory": bench_loss_memory(512, 16_000, 256) if quick else bench_loss_memory()}


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Table rows for tools/bench.py."""
    out = []
    f = r.get("fill", {})
    if "text" in f:
        t = f["text"]
        out.append(("packing: real-token fraction, 256-token rows", f"{t['best_fit']:.3f}", ">= 0.98",
                    f"greedy {t['greedy']:.3f}, {t['samples_per_row']:.1f} samples/row, buffer {t['buffer']}"))
    if "multimodal" in f:
        m = f["multimodal"]
        out.append((f"packing multimodal: real-token fraction, {m['max_length']}-token rows, {m['image_tokens']} image tokens",
                    f"{m['best_fit']:.3f}", ">= 0.95",
                    f"greedy {m['greedy']:.3f}, {m['samples_per_row']:.1f} samples/row, buffer {m['buffer']}"))
    s = r.get("step")
    if s:
        out.append((f"stage-2 {s['size']} step, packed / unpacked samples/s", f"{s['ratio']:.2f}", "-",
                    f"{s['packed']['step_s'] * 1e3:.0f} vs {s['unpacked']['step_s'] * 1e3:.0f} ms/step, pad "
                    f"{s['packed']['pad_fraction']:.2f} vs {s['unpacked']['pad_fraction']:.2f}"))
    lm = r.get("loss_memory")
    if lm:
        out.append((f"loss+backward peak memory, {lm['tokens']} tokens x {lm['vocab']} vocab x {lm['hidden']} (full / fused)",
                    f"{lm['ratio']:.1f}", ">= 4",
                    f"{lm['full']['peak_mb']:.0f} vs {lm['fused']['peak_mb']:.0f} MB (weight grad {lm['weight_grad_mb']:.0f} MB "
                    f"in both), checkpointed chunks {lm['checkpointed']['peak_mb']:.0f} MB ({lm['ratio_checkpointed']:.1f}x), "
                    f"CPU {lm['full']['cpu_seconds']:.0f} vs {lm['fused']['cpu_seconds']:.0f} s, |dloss| {lm['max_abs_loss_diff']:.1e}"))
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    bench.logging_quiet()
    torch.set_num_threads(1)
    data_dir = bench.ensure_demo_data(bench.ROOT / "data" / "demo")
    with tempfile.TemporaryDirectory(prefix="dsvl-bench-packing-") as tmp:
        r = run(data_dir, Path(tmp), quick)
    for row in rows(r):
        print("  ".join(row))
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
