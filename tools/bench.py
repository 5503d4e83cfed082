#!/usr/bin/env python
"""dsvl benchmarks: ratios measured in one run on one machine, printed as a table and written as JSON.

    python tools/bench.py                       # full CPU run (< 10 min on 2 cores)
    python tools/bench.py --quick --out b.json  # smoke test (CI)
    python tools/bench.py --device cuda         # adds tokens/s and MFU of tiny and 1.3B stage-2 steps

Sections (each a ratio of two things measured here, now, on the same machine):
- overhead: one dsvl stage-2 step through the Lightning Trainer (`PretrainStage`, its logging and
  grad-norm hook included) vs a hand-written loop doing the same forward, backward, clip and AdamW
  step on the same initial weights and the same batches (goal <= 1.05);
- grouping: samples/s of modality-grouped vs mixed-within-batch micro-batches drawn from the same
  streams (70% text, 30% image), at the tiny and a mid-size config, with padding fraction each;
- packing (tools/bench_packing.py): real-token fraction of best-fit packed rows (text 256, multimodal
  4096 with 576-token images), mid-size stage-2 step packed vs unpacked, loss+backward memory;
- data: preprocessed images/s of one worker for the hybrid tower (384 + 1024) vs transformers'
  `DeepseekVLHybridImageProcessor` on the same images (goal >= 1.0), and the demo loader's batches/s
  over the trainer's consumption (>= 1: one worker keeps up);
- convert: `dsvl-data convert --format llava` records/s on 384-px JPEGs per worker count (tools/bench_convert.py);
- rss: peak RSS of a demo stage-2 run (`dsvl-train experiment=demo/pretrain`) in a subprocess;
- memory: peak RSS per rank of a 2-process FSDP2 build / load of the 1.3B preset over one process
  holding it whole (goal <= 0.65; tools/bench_scale.py), then the same under DeepSpeed ZeRO-3;
- resume: seconds to resume a data stream after 10x the consumed samples over 1x (goal <= 1.5);
- trainer: SFT samples/s and peak RSS, dsvl vs TRL's SFTTrainer on the same tiny hybrid checkpoint and
  samples (goal >= 1.2; tools/bench_trainer.py, needs the `bench` extra);
- eval: questions/s of multiple-choice option scoring at the mid size, each option row encoding its
  own copy of the question's images vs each question's images encoded once (`tools/bench_eval.py`);
- cuda (only with --device cuda): tokens/s and model FLOPs utilisation of stage-2 steps.

Timings take, per step, the fastest of `--repeats` passes (other processes on a shared machine only
ever add time), and skip warm-up steps. All workloads are built with dsvl's own config, data,
model and stage code (compose -> build_datamodule -> build_model -> PretrainStage).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
               ("WANDB_MODE", "offline")):
    os.environ.setdefault(_k, _v)

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # the bench_<topic>.py sections
import bench_scale  # noqa: E402
RATIO_70_30 = "{start: 0.7, target: 0.7, warmup_steps: 0, shape: linear}"
# a mid-size hybrid model: 4-layer LLM of width 256, towers at 64 / 128 px giving 64 image tokens per image
MID = ["model.llm.hidden_size=256", "model.llm.intermediate_size=688", "model.llm.num_hidden_layers=4",
       "model.llm.num_attention_heads=8", "model.llm.num_key_value_heads=8",
       "model.vision.low.image_size=64", "model.vision.low.hidden_size=64", "model.vision.low.intermediate_size=128",
       "model.vision.high.image_size=128"]
PEAK_BF16_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "4090": 165.2}


# ---------------------------------------------------------------------------------------- workloads
def stage2_config(data_dir: Path, out: Path, *, size: str = "tiny", mode: str = "grouped", packing: bool = True,
                  micro: int = 8, max_length: int = 256, extra: Sequence[str] = ()) -> Any:
    """The demo stage-2 recipe at a constant 70/30 language ratio, one micro-batch per global step."""
    from dsvl.cli._config import compose

    overrides = ["experiment=demo/pretrain", "model=tiny", "trainer=cpu", f"paths.data_dir={data_dir}", f"data.mode={mode}",
                 f"data.packing={str(packing).lower()}", f"data.micro_batch_size={micro}", f"stage.global_batch={micro}",
                 f"data.max_length={max_length}", f"data.schedule={RATIO_70_30}", "data.num_workers=0",
                 "logger=none", "callbacks=none", "scheduler=constant", *(MID if size == "mid" else []), *extra]
    return compose(overrides, output_dir=out)


def make_batches(cfg: Any, n: int) -> tuple[list[dict[str, Any]], float]:
    """`n` training micro-batches from the config's DSVLDataModule (one process = one worker), and their seconds."""
    from hydra.utils import get_class

    from dsvl.cli.train import accumulation, align_model_to_data, build_datamodule

    dm = build_datamodule(cfg, accumulation(cfg, 1), get_class(cfg.stage._target_).supervise)
    align_model_to_data(cfg, dm)
    it = iter(dm.train_dataset())
    start = time.perf_counter()
    batches = [dm.record(next(it)) for _ in range(n)]
    return batches, time.perf_counter() - start


def new_stage(cfg: Any, seed: int = 0) -> Any:
    """A fresh `PretrainStage` over a freshly built model (same seed, same weights), as the run path makes it."""
    from hydra.utils import instantiate

    from dsvl.cli.models import build_model

    torch.manual_seed(seed)
    model = build_model(cfg.model)
    return instantiate(cfg.stage, model=model, optimizer=instantiate(cfg.optim, _convert_="all"), scheduler=None,
                       _convert_="all")


class HandStep:
    """Plain PyTorch on a stage's model: forward, backward, clip, AdamW (the stage's own parameter
    groups and optimizer factory), zero_grad. Calling it on a batch returns (seconds, loss)."""

    def __init__(self, stage: Any, clip: float = 1.0) -> None:
        self.model, self.clip = stage.model, clip
        self.model.train()
        for part in stage.frozen_parts:
            self.model.parts()[part].eval()
        self.params = stage.trainable_parameters()
        self.optimizer = stage.optimizer_factory(stage.parameter_groups())

    def __call__(self, batch: dict[str, Any]) -> tuple[float, float]:
        from dsvl.eval.scoring import forward_inputs

        t0 = time.perf_counter()
        out = self.model(**forward_inputs(batch), labels=batch["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        return time.perf_counter() - t0, loss


def lockstep(steppers: Sequence[HandStep], batches: Sequence[Sequence[dict[str, Any]]], warmup: int = 0) -> list[list[float]]:
    """Step i of every stepper, then step i + 1 of every stepper, ...: on a shared machine, load
    changes hit all of them alike. `warmup` untimed steps first (on the first batches). Returns
    per-stepper per-step seconds."""
    for i in range(warmup):
        for k, step in enumerate(steppers):
            step(batches[k][i])
    times: list[list[float]] = [[] for _ in steppers]
    for i in range(min(len(b) for b in batches)):
        for k, step in enumerate(steppers):
            times[k].append(step(batches[k][i])[0])
    return times


def lightning_vs_hand(cfg: Any, batches: Sequence[dict[str, Any]], clip: float = 1.0
                      ) -> tuple[list[float], list[float], list[float], list[float]]:
    """The same steps through `lightning.Trainer.fit` (a fresh `PretrainStage`) and through `HandStep`
    (a second fresh stage, same weights), in lockstep: the hand step on batch i runs inside
    `on_train_batch_start` of Lightning's step i, just before it. A Lightning step is timed from the
    end of that hand step to the start of the next one: its training step, optimizer step, hooks,
    logging and the fetch of the next batch. Returns (lightning s, hand s, lightning losses, hand losses)."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    hand = HandStep(new_stage(cfg), clip)

    class Lockstep(pl.Callback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []  # (entry, after the hand step)
            self.hand_s: list[float] = []
            self.hand_loss: list[float] = []
            self.losses: list[float] = []
            self.end = 0.0

        def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
            entry = time.perf_counter()
            seconds, loss = hand(batches[batch_idx])
            self.hand_s.append(seconds)
            self.hand_loss.append(loss)
            self.marks.append((entry, time.perf_counter()))

        def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, *args: Any) -> None:
            self.losses.append(float(outputs["loss"]))

        def on_train_end(self, *args: Any) -> None:
            self.end = time.perf_counter()

    cb = Lockstep()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=len(batches), logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=clip,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[cb])
    loader = DataLoader([dict(b) for b in batches], batch_size=None, shuffle=False)
    trainer.fit(new_stage(cfg), train_dataloaders=loader)
    nexts = [entry for entry, _ in cb.marks[1:]] + [cb.end]
    light = [nxt - after for (_, after), nxt in zip(cb.marks, nexts)]
    return light, cb.hand_s, cb.losses, cb.hand_loss


def best_of(runs: Sequence[Sequence[float]], warmup: int) -> float:
    """Sum over steps (after warm-up) of each step's fastest time over the repeats."""
    return sum(min(step) for step in list(zip(*runs))[warmup:])


# ---------------------------------------------------------------------------------------- sections
def bench_overhead(data_dir: Path, tmp: Path, steps: int, repeats: int, warmup: int, size: str = "tiny") -> dict[str, Any]:
    cfg = stage2_config(data_dir, tmp / f"overhead_{size}", size=size)
    batches, loader_s = make_batches(cfg, steps)
    hand, light, loss_diff = [], [], 0.0
    for _ in range(repeats):
        t_l, t_h, l_l, l_h = lightning_vs_hand(cfg, batches)
        hand.append(t_h)
        light.append(t_l)
        loss_diff = max(loss_diff, max(abs(a - b) for a, b in zip(l_h, l_l)))
    h, lt = best_of(hand, warmup), best_of(light, warmup)
    n = steps - warmup
    samples = sum(b["stats"]["samples"] for b in batches)
    return {"steps_timed": n, "hand_step_s": h / n, "lightning_step_s": lt / n, "ratio": lt / h, "goal": 1.05,
            "max_abs_loss_diff": loss_diff,
            # the demo loader (one worker, in-process) vs what the trainer consumes
            "loader_batches_per_s": steps / loader_s, "train_batches_per_s": n / lt,
            "loader_over_train": (steps / loader_s) / (n / lt), "samples_per_step": samples / steps}


def bench_grouping(data_dir: Path, tmp: Path, size: str, steps: int, repeats: int, warmup: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    modes = ("grouped", "mixed")
    cfgs = {m: stage2_config(data_dir, tmp / f"group_{size}_{m}", size=size, mode=m, packing=False) for m in modes}
    # a multiple of 10 steps at a 0.7 ratio: both modes draw exactly 70% text and 30% image samples,
    # the same ones (each modality's stream in order)
    steps = max(10, steps // 10 * 10)
    batches = {m: make_batches(cfgs[m], steps)[0] for m in modes}
    # both modes step in lockstep (grouped step i, mixed step i, ...), fastest of the repeats per step
    runs = [lockstep([HandStep(new_stage(cfgs[m])) for m in modes], [batches[m] for m in modes], warmup)
            for _ in range(repeats)]
    keys: dict[str, set[str]] = {}
    for k, mode in enumerate(modes):
        seconds = best_of([r[k] for r in runs], 0)
        made = timed = batches[mode]
        samples = sum(b["stats"]["samples"] for b in timed)
        tokens = sum(b["stats"]["tokens"] for b in timed)
        pad = sum(b["stats"]["pad_tokens"] for b in timed)
        keys[mode] = {key for b in made for key in b["keys"]}
        out[mode] = {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds,
                     "pad_fraction": pad / (pad + tokens), "images": sum(b["stats"]["images"] for b in made),
                     "step_s": seconds / len(timed)}
    union = keys["grouped"] | keys["mixed"]
    out["same_samples"] = len(keys["grouped"] & keys["mixed"]) / max(1, len(union))
    out["ratio"] = out["grouped"]["samples_per_s"] / out["mixed"]["samples_per_s"]
    # what padding alone predicts: the same real tokens, spread over (1 - pad fraction)^-1 as many positions
    out["padded_positions_ratio"] = (1 - out["grouped"]["pad_fraction"]) / (1 - out["mixed"]["pad_fraction"])
    out["paper_gpu_ratio"] = 1.2
    return out


def synthetic_images(n: int, seed: int = 0) -> list[Any]:
    """Photo-sized RGB images of mixed aspect ratios (smooth gradients plus noise, like JPEG content)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (800, 600), (1024, 768), (480, 640), (1280, 720), (512, 512)]
    images = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 255 // (w + h))], -1)
        noise = rng.integers(0, 40, size=(h, w, 3))
        images.append(Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8")))
    return images


def bench_images(n: int, repeats: int) -> dict[str, Any]:
    """One worker (one thread): dsvl's ImagePreprocessor vs transformers' hybrid image processor, 384 + 1024."""
    from transformers import DeepseekVLHybridImageProcessor

    from dsvl.cli._config import compose
    from dsvl.data.images import ImagePreprocessor
    from dsvl.cli.models import vision_spec

    spec = vision_spec(compose(["model=deepseek_vl_7b"]).model)
    low, high = spec.input("pixel_values"), spec.input("high_res_pixel_values")
    ours = ImagePreprocessor(spec)
    ref = DeepseekVLHybridImageProcessor(size={"height": low.size, "width": low.size},
                                         high_res_size={"height": high.size, "width": high.size},
                                         image_mean=list(low.mean), image_std=list(low.std),
                                         high_res_image_mean=list(high.mean), high_res_image_std=list(high.std))
    images = synthetic_images(n)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one data worker = one thread
    try:
        def timed(fn: Callable[[Any], dict[str, torch.Tensor]]) -> float:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for im in images:
                    fn(im)
                best = min(best, time.perf_counter() - t0)
            return n / best

        ours_ips = timed(lambda im: ours([im]))
        ref_ips = timed(lambda im: ref([im], return_tensors="pt"))
        a, b = ours(images[:2]), ref(images[:2], return_tensors="pt")
        diff = max(float((a[k] - b[k]).abs().max()) for k in ("pixel_values", "high_res_pixel_values"))
    finally:
        torch.set_num_threads(threads)
    return {"images": n, "dsvl_images_per_s": ours_ips, "transformers_images_per_s": ref_ips,
            "ratio": ours_ips / ref_ips, "goal": 1.0, "max_abs_diff": diff, "transformers_class": type(ref).__name__}


RSS_PROBE = """import resource, runpy, sys
sys.argv = ["dsvl-train", *sys.argv[1:]]
try:
    runpy.run_module("dsvl.cli.train", run_name="__main__")
finally:
    print("DSVL_PEAK_RSS_KB=%d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def bench_memory(data_dir: Path, tmp: Path, steps: int) -> dict[str, Any]:
    """Peak RSS of `dsvl-train experiment=demo/pretrain` (the demo's stage 2, validation included) in a
    child process that reports its own ru_maxrss."""
    run_dir = tmp / "memory_run"
    args = ["experiment=demo/pretrain", f"paths.data_dir={data_dir}", f"trainer.max_steps={steps}",
            "scheduler.warmup_steps=1", "logger=none", f"hydra.run.dir={run_dir}", "limit_val_batches=2",
            "callbacks.progress_bar.refresh_rate=0"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, *args], capture_output=True, text=True, cwd=tmp)
    seconds = time.perf_counter() - t0
    peak = [line.split("=", 1)[1] for line in proc.stderr.splitlines() if line.startswith("DSVL_PEAK_RSS_KB=")]
    if proc.returncode != 0 or not peak:
        raise RuntimeError(f"demo run failed: {proc.stderr[-2000:]}")
    return {"steps": steps, "peak_rss_mb": int(peak[-1]) / 1024.0, "seconds": seconds}


def bench_cuda(data_dir: Path, tmp: Path, sizes: Sequence[str], steps: int, device: str, peak_tflops: float | None,
               micro: int, seq: int) -> dict[str, Any]:
    """tokens/s and MFU of stage-2 text steps (packed, bf16 autocast) of the hand loop on `device`.

    MFU counts 6 x (LLM parameters) + 12 x layers x width x sequence FLOPs per token (PaLM appendix B)
    against the device's dense bf16 peak.
    """
    from dsvl.eval.scoring import forward_inputs

    out: dict[str, Any] = {}
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    if peak_tflops is None and device == "cuda":
        peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    for size in sizes:
        extra = ["model=deepseek_vl_1.3b"] if size == "1.3b" else []
        cfg = stage2_config(data_dir, tmp / f"cuda_{size}", mode="text_only", packing=True, micro=micro,
                            max_length=seq, extra=[*extra, "data.pad_to_max_length=true"])
        batches, _ = make_batches(cfg, 2)
        stage = new_stage(cfg)
        model = stage.model.to(device)
        optimizer = stage.optimizer_factory(stage.parameter_groups())
        llm = model.llm
        n_params = sum(p.numel() for p in llm.parameters())
        layers, width = llm.config.num_hidden_layers, llm.config.hidden_size
        times = []
        for i in range(steps):
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batches[i % 2].items()}
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                loss = model(**forward_inputs(batch), labels=batch["labels"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        step_s = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
        tokens = int(batches[0]["input_ids"].numel())
        flops = tokens * (6 * n_params + 12 * layers * width * batches[0]["input_ids"].shape[1])
        out[size] = {"tokens_per_step": tokens, "step_s": step_s, "tokens_per_s": tokens / step_s,
                     "tflops_per_s": flops / step_s / 1e12,
                     "mfu": (flops / step_s / 1e12 / peak_tflops) if peak_tflops else None}
        del model, stage, optimizer
        if device == "cuda":
            torch.cuda.empty_cache()
    out["device_name"], out["peak_bf16_tflops"] = name, peak_tflops
    return out


# ---------------------------------------------------------------------------------------- report
def table(results: dict[str, Any]) -> str:
    """The results as a fixed-width table of ratios (and the absolute numbers behind them)."""
    rows: list[tuple[str, str, str, str]] = []
    o = results.get("overhead")
    if o:
        rows.append(("framework overhead tiny (Lightning / hand loop)", f"{o['ratio']:.3f}", "<= 1.05",
                     f"{o['lightning_step_s'] * 1e3:.1f} vs {o['hand_step_s'] * 1e3:.1f} ms/step, |dloss| {o['max_abs_loss_diff']:.1e}"))
    om = results.get("overhead_mid")
    if om:
        rows.append(("framework overhead mid (Lightning / hand loop)", f"{om['ratio']:.3f}", "<= 1.05",
                     f"{om['lightning_step_s'] * 1e3:.1f} vs {om['hand_step_s'] * 1e3:.1f} ms/step, |dloss| {om['max_abs_loss_diff']:.1e}"))
    for size in ("tiny", "mid"):
        g = results.get("grouping", {}).get(size)
        if g:
            rows.append((f"grouping {size} (grouped / mixed samples/s)", f"{g['ratio']:.3f}", "paper ~1.2 (GPU)",
                         f"pad {g['grouped']['pad_fraction']:.2f} vs {g['mixed']['pad_fraction']:.2f} "
                         f"(positions {g['padded_positions_ratio']:.2f}x), same samples {g['same_samples']:.2f}"))
    from bench_packing import rows as packing_rows

    rows += packing_rows(results.get("packing", {}))
    from bench_trainer import rows as trainer_rows

    rows += trainer_rows(results.get("trainer", {}))
    d = results.get("images")
    if d:
        rows.append(("images/s per worker, 384+1024 (dsvl / transformers)", f"{d['ratio']:.2f}", ">= 1.0",
                     f"{d['dsvl_images_per_s']:.1f} vs {d['transformers_images_per_s']:.1f} img/s, max diff {d['max_abs_diff']:.1e}"))
    if o:
        rows.append(("demo loader / trainer consumption (1 worker)", f"{o['loader_over_train']:.2f}", ">= 1.0",
                     f"{o['loader_batches_per_s']:.1f} vs {o['train_batches_per_s']:.1f} batches/s"))
    for w, c in results.get("convert", {}).get("workers", {}).items():
        rows.append((f"convert llava, 384-px JPEGs, {w} worker(s) (records/s)", f"{c['records_per_s']:.1f}", "-",
                     f"{c['records_per_s_per_worker']:.1f}/worker, same bytes: {results['convert']['identical_output']}"))
    rows += bench_scale.rows(results["memory"]) if results.get("memory") else []
    rows += bench_scale.rows(results["memory_zero3"]) if results.get("memory_zero3") else []
    rows += bench_scale.resume_rows(results["resume"]) if results.get("resume") else []
    m = results.get("rss")
    if m:
        rows.append(("peak RSS, demo stage-2 run (MB)", f"{m['peak_rss_mb']:.0f}", "-", f"{m['steps']} steps, {m['seconds']:.0f} s"))
    e = results.get("eval")
    if e:
        rows.append(("MC scoring questions/s mid (images once / per option)", f"{e['ratio']:.2f}", ">= 1.0",
                     f"{e['after_questions_per_s']:.2f} vs {e['before_questions_per_s']:.2f} q/s, max |dscore| {e['max_abs_score_diff']:.1e}"))
    for size, c in results.get("cuda", {}).items():
        if isinstance(c, dict):
            mfu = f"{c['mfu']:.3f}" if c.get("mfu") is not None else "n/a"
            rows.append((f"{results['device']} {size} stage-2 MFU", mfu, "-", f"{c['tokens_per_s']:.0f} tokens/s"))
    w = [max(len(r[i]) for r in rows + [("measure", "value", "goal", "detail")]) for i in range(4)]
    lines = ["  ".join(h.ljust(w[i]) for i, h in enumerate(("measure", "value", "goal", "detail"))), "  ".join("-" * x for x in w)]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def ensure_demo_data(data_dir: Path) -> Path:
    """The bundled demo data set (made once, like `dsvl-data demo`)."""
    if not (data_dir / "manifest.json").exists():
        from dsvl.data.demo import make_demo_data

        make_demo_data(data_dir)
    return data_dir


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps of each section (smoke test, seconds not minutes)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data" / "demo", help="demo data (made if missing)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda adds tokens/s and MFU rows")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak for MFU (default: known GPUs)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: one core per measurement, stable when the machine is shared)")
    sections = ["overhead", "grouping", "packing", "images", "convert", "rss", "memory", "resume", "eval", "trainer"]
    ap.add_argument("--skip", nargs="*", default=[], choices=sections)
    ap.add_argument("--only", nargs="*", default=None, choices=sections, help="run only these sections")
    args = ap.parse_args(argv)
    if args.only is not None:
        args.skip = [s for s in sections if s not in args.only]
    quick = args.quick
    steps, repeats, warmup = (6, 1, 2) if quick else (30, 3, 4)
    logging_quiet()
    torch.set_num_threads(args.threads)
    data_dir = ensure_demo_data(args.data_dir.resolve())
    results: dict[str, Any] = {"device": args.device, "quick": quick, "machine": platform.machine(),
                               "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "torch": torch.__version__, "command": " ".join(["python tools/bench.py", *(argv if argv is not None else sys.argv[1:])]),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsvl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if "overhead" not in args.skip:
            results["overhead"] = bench_overhead(data_dir, tmp, steps, repeats, warmup)
            if not quick:  # fixed per-step costs shrink against a bigger model's step
                results["overhead_mid"] = bench_overhead(data_dir, tmp, 12, 2, 2, size="mid")
        if "grouping" not in args.skip:
            results["grouping"] = {size: bench_grouping(data_dir, tmp, size, steps if size == "tiny" else 20, repeats, 2)
                                   for size in (("tiny",) if quick else ("tiny", "mid"))}
        if "packing" not in args.skip:
            from bench_packing import run as bench_packing

            results["packing"] = bench_packing(data_dir, tmp, quick)
        if "images" not in args.skip:
            results["images"] = bench_images(3 if quick else 12, 1 if quick else 2)
        if "convert" not in args.skip:
            from bench_convert import bench_convert

            results["convert"] = bench_convert(40 if quick else 400)
        if "rss" not in args.skip:
            results["rss"] = bench_memory(data_dir, tmp, 3 if quick else 20)
        if "memory" not in args.skip and (not quick or args.only):  # minutes and ~10 GB: asked for, not smoke-tested
            results["memory"] = bench_scale.bench_memory("tiny" if quick else "deepseek_vl_1.3b")
            results["memory_zero3"] = bench_scale.bench_memory("tiny" if quick else "deepseek_vl_1.3b", sharded="zero3")
        if "resume" not in args.skip:
            results["resume"] = bench_scale.bench_resume(4000 if quick else 20000, 300 if quick else 1500)
        if "eval" not in args.skip:
            from bench_eval import bench_option_scoring

            results["eval"] = bench_option_scoring(data_dir, 8 if quick else 48, repeats, args.device)
        if "trainer" not in args.skip and (not quick or args.only):  # two training runs: asked for, not smoke-tested
            from bench_trainer import bench_trainer

            results["trainer"] = bench_trainer(data_dir, tmp, *((6, 2) if quick else (40, 5)), threads=args.threads,
                                               repeats=1 if quick else 2)
        if args.device == "cuda":
            if not torch.cuda.is_available():
                raise SystemExit("--device cuda: no CUDA device visible")
            results["cuda"] = bench_cuda(data_dir, tmp, ("tiny",) if quick else ("tiny", "1.3b"), 5 if quick else 20,
                                         "cuda", args.peak_tflops, micro=8 if quick else 4, seq=256 if quick else 4096)
    results["seconds"] = time.perf_counter() - t0
    print(table(results))
    print(f"\n{results['seconds']:.0f} s, {results['cpus']} CPUs, torch {results['torch']} ({results['torch_threads']} threads)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    return results


def logging_quiet() -> None:
    """Lightning / dsvl info lines would drown the table."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "dsvl", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
