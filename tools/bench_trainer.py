#!/usr/bin/env python
"""dsvl's SFT stage vs TRL's `SFTTrainer` (transformers' `Trainer`) fine-tuning the same model on the same samples.

    python tools/bench_trainer.py [--quick]       # or: python tools/bench.py --only trainer

Both fine-tune one tiny random `DeepseekVLHybridForConditionalGeneration` checkpoint in the released
layout (config, safetensors, demo tokenizer, processor with the deepseek chat template) on the demo's
multimodal SFT conversations (`sft/multimodal/train`, one image each), each in a fresh process:
- dsvl: `dsvl-train experiment=finetune/full model.pretrained=<checkpoint>` with the demo SFT data (its
  own webdataset loader, answers-only loss);
- TRL: `SFTTrainer` with the checkpoint's processor and TRL's vision-language collator on the same
  conversations, read and decoded into memory beforehand (TRL's reading is not timed, dsvl's is),
  loss on the whole conversation (TRL's assistant-only loss needs generation tags in the
  chat template).
The same in both: micro-batch, max length 256, fp32 on CPU, AdamW (lr, betas, no weight decay),
gradient clipping 1.0, no gradient accumulation, SAM tower frozen (the stage-3 recipe), no
validation or checkpoints, torch threads, no data workers, number of optimizer steps. Measured:
samples/s at the median step time after `warmup` steps (step end to step end, data loading included),
the fastest of `repeats` alternating runs per side, and each process's peak RSS.
TRL is a bench-only extra (`pip install trl`, pinned in pyproject's `bench` extra); without it the
`Trainer` comparison is skipped with that reason.
"""
from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MICRO, MAX_LENGTH, LR = 8, 256, 2e-5
# the tiny sizes of the tests (tests/model/_tiny.py), as a transformers hybrid config
TEXT = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-6)
SIGLIP = dict(model_type="siglip_vision_model", image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
              num_hidden_layers=2, num_attention_heads=2)
SAM = dict(model_type="sam_vision_model", image_size=64, patch_size=8, hidden_size=32, mlp_dim=64, num_hidden_layers=2,
           num_attention_heads=2, window_size=4, global_attn_indexes=[1], output_channels=16)


def make_checkpoint(data_dir: Path, out: Path) -> Path:
    """A random tiny DeepSeek-VL hybrid checkpoint with the demo tokenizer and a deepseek-template processor."""
    from transformers import (AutoTokenizer, DeepseekVLHybridConfig, DeepseekVLHybridForConditionalGeneration,
                              DeepseekVLHybridProcessor)

    from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT, IMAGE_TOKEN
    from dsvl.model import hf_image_processor
    from dsvl.model.export import deepseek_chat_template
    from dsvl.model.spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec

    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    text = {**TEXT, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    model = DeepseekVLHybridForConditionalGeneration(DeepseekVLHybridConfig(
        text_config=text, vision_config=SIGLIP, high_res_vision_config=SAM,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)))
    model.save_pretrained(out)
    spec = VisionSpec((ImageInputSpec("pixel_values", 32, SIGLIP_MEAN, SIGLIP_STD),
                       ImageInputSpec("high_res_pixel_values", 64, CLIP_MEAN, CLIP_STD)), 16)
    DeepseekVLHybridProcessor(image_processor=hf_image_processor(spec), tokenizer=tokenizer, num_image_tokens=16,
                              chat_template=deepseek_chat_template(DEFAULT_SYSTEM_PROMPT, tokenizer.eos_token)
                              ).save_pretrained(str(out))
    return out


def read_conversations(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """The first `n` samples of the demo's multimodal SFT train shards in stream order, as TRL's
    conversational vision format: {"messages": [...], "images": [PIL image]} (the image token
    taken out of the text: TRL puts the image part before the first user turn, where it was)."""
    from PIL import Image

    from dsvl.data.chat import IMAGE_TOKEN

    out: list[dict[str, Any]] = []
    for shard in sorted((data_dir / "sft" / "multimodal" / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members: dict[str, dict[str, bytes]] = {}
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for parts in members.values():
            conv = json.loads(parts["json"])["conversation"]
            images = [Image.open(io.BytesIO(parts[f"{i}.png"])).convert("RGB") for i in range(len(parts) - 1)]
            messages = [{"role": t["role"], "content": t["content"].replace(IMAGE_TOKEN, "")} for t in conv]
            out.append({"messages": messages, "images": images})
            if len(out) == n:
                return out
    return out


class _Times:
    """perf_counter at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def rate(self, warmup: int, micro: int) -> float:
        """Samples/s at the median step time after `warmup` steps (a shared machine's spikes left out)."""
        ends = self.ends[warmup:]
        return micro / statistics.median(b - a for a, b in zip(ends, ends[1:]))


DSVL_TIMES = _Times()


def dsvl_step_timer() -> Any:
    """A Lightning callback recording step ends into `DSVL_TIMES` (named by the dsvl run's config)."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            DSVL_TIMES.ends.append(time.perf_counter())

    return StepTimer()


def run_dsvl(data_dir: Path, ckpt: Path, out: Path, steps: int, warmup: int, micro: int, threads: int) -> dict[str, Any]:
    from dsvl.cli._config import compose
    from dsvl.cli.train import train

    cfg = compose(["experiment=finetune/full", f"model.pretrained={ckpt}", "data=demo_sft", f"paths.data_dir={data_dir}",
                   "trainer=cpu", "trainer.precision=32-true", "model.gradient_checkpointing=false",
                   f"trainer.max_steps={steps}", f"data.micro_batch_size={micro}", f"stage.global_batch={micro}",
                   f"data.max_length={MAX_LENGTH}", "~data.train_sources.sft_text", "data.schedule={start: 0.0, target: 0.0, warmup_steps: 0, shape: linear}",
                   "data.num_workers=0", f"optim.lr={LR}", "scheduler.warmup_steps=1", "logger=none",
                   "validate_at_end=false", "limit_val_batches=0", "export_dir=null", f"torch_threads={threads}",
                   "callbacks.progress_bar.refresh_rate=0", "callbacks.model_checkpoint=null",
                   f"data.shuffle_buffer={steps * micro}", "+callbacks.bench_timer._target_=bench_trainer.dsvl_step_timer"],
                  output_dir=out)
    train(cfg)
    import bench_trainer  # the module the callback was built from (this file runs as __main__)

    return {"samples_per_s": bench_trainer.DSVL_TIMES.rate(warmup, micro), "steps": len(bench_trainer.DSVL_TIMES.ends)}


def run_trl(data_dir: Path, ckpt: Path, out: Path, steps: int, warmup: int, micro: int, threads: int) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoProcessor, DeepseekVLHybridForConditionalGeneration, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(threads)
    times = _Times()

    class StepTimer(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.ends.append(time.perf_counter())

    model = DeepseekVLHybridForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32)
    for name, p in model.named_parameters():  # the stage-3 recipe: SAM tower (encoder, neck, proj, alpha) frozen, as dsvl's run
        p.requires_grad_(not name.startswith("model.high_res_vision"))
    data = Dataset.from_list(read_conversations(data_dir, steps * micro))
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=micro, max_steps=steps, learning_rate=LR,
                     adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0, warmup_steps=1,
                     lr_scheduler_type="cosine", max_length=MAX_LENGTH, use_cpu=True, bf16=False, fp16=False,
                     logging_steps=10**6, save_strategy="no", report_to=[], dataloader_num_workers=0, seed=0,
                     disable_tqdm=True)
    SFTTrainer(model=model, args=args, train_dataset=data, processing_class=AutoProcessor.from_pretrained(ckpt),
               callbacks=[StepTimer()]).train()
    return {"samples_per_s": times.rate(warmup, micro), "steps": len(times.ends)}


def _worker(which: str, args: dict[str, Any]) -> None:
    import resource

    fn = {"dsvl": run_dsvl, "trl": run_trl}[which]
    r = fn(Path(args["data_dir"]), Path(args["ckpt"]), Path(args["out"]), args["steps"], args["warmup"],
           args["micro"], args["threads"])
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCH_TRAINER=" + json.dumps(r))


def bench_trainer(data_dir: Path, tmp: Path, steps: int = 40, warmup: int = 5, micro: int = MICRO,
                  threads: int = 1, repeats: int = 2) -> dict[str, Any]:
    """{"dsvl": {samples_per_s, peak_rss_mb}, "trl": {...}, "ratio": dsvl / trl samples/s} (or {"skipped": why}).
    Runs alternate dsvl, TRL, TRL, dsvl, ... `repeats` times each; each side keeps its fastest run."""
    try:
        import trl
    except ImportError:
        return {"skipped": "trl not installed (pip install -e '.[bench]')"}
    ckpt = make_checkpoint(data_dir, tmp / "trainer_ckpt")
    out: dict[str, Any] = {"steps": steps, "warmup": warmup, "micro": micro, "max_length": MAX_LENGTH,
                           "threads": threads, "trl": {"version": trl.__version__}, "goal": 1.2}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    runs: dict[str, list[dict[str, Any]]] = {"dsvl": [], "trl": []}
    for i in range(repeats):
        for which in ("dsvl", "trl")[::1 if i % 2 == 0 else -1]:
            args = dict(data_dir=str(data_dir), ckpt=str(ckpt), out=str(tmp / f"trainer_{which}_{i}"), steps=steps,
                        warmup=warmup, micro=micro, threads=threads)
            proc = subprocess.run([sys.executable, __file__, "--worker", which, json.dumps(args)],
                                  capture_output=True, text=True, cwd=tmp, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_TRAINER=")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"{which} trainer run failed: {proc.stderr[-3000:]}")
            runs[which].append(json.loads(lines[-1].split("=", 1)[1]))
    for which, rs in runs.items():
        out.setdefault(which, {}).update(max(rs, key=lambda r: r["samples_per_s"]))
        out[which]["runs_samples_per_s"] = [r["samples_per_s"] for r in rs]
    out["ratio"] = out["dsvl"]["samples_per_s"] / out["trl"]["samples_per_s"]
    return out


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Table rows for tools/bench.py."""
    if not r:
        return []
    if "skipped" in r:
        return [("SFT samples/s, dsvl / TRL SFTTrainer", "skipped", ">= 1.2", r["skipped"])]
    d, t = r["dsvl"], r["trl"]
    return [(f"SFT samples/s tiny hybrid, dsvl / TRL {t['version']} SFTTrainer", f"{r['ratio']:.2f}", ">= 1.2",
             f"{d['samples_per_s']:.1f} vs {t['samples_per_s']:.1f} samples/s, peak RSS {d['peak_rss_mb']:.0f} vs "
             f"{t['peak_rss_mb']:.0f} MB, {r['steps']} steps x {r['micro']}")]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], json.loads(sys.argv[3]))
        return
    sys.path.insert(0, str(ROOT / "tools"))
    import bench

    quick = "--quick" in sys.argv
    bench.logging_quiet()
    data_dir = bench.ensure_demo_data(ROOT / "data" / "demo")
    with tempfile.TemporaryDirectory(prefix="dsvl-bench-trainer-") as tmp:
        r = bench_trainer(data_dir, Path(tmp), *((6, 2) if quick else (40, 5)), repeats=1 if quick else 2)
    print(json.dumps(r, indent=2))
    for row in rows(r):
        print("  ".join(row))


if __name__ == "__main__":
    main()
