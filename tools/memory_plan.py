#!/usr/bin/env python
"""GPU memory plan for fine-tuning DeepSeek-VL: full / LoRA / QLoRA of the 1.3B and 7B, no weights needed.

    python tools/memory_plan.py                      # markdown table: 1.3B and 7B, 4096 tokens, micro-batch 1
    python tools/memory_plan.py --seq-len 2048 --lora-r 64

Each model is built on the meta device from its preset (dsvl's own build_model, LoRA applied with peft as
`model.lora` does, parts frozen as the recipe's `stage.trainable`), so parameter and trainable counts are
exact. Memory per GPU (one process, no sharding) is the sum of:
- weights: full runs bf16-mixed (fp32 master weights, 4 B/param); LoRA runs bf16-true (2 B/param);
  QLoRA keeps the LLM's decoder linear layers in 4-bit NF4 with double-quantized absmax (~0.52 B/param);
- gradients + AdamW state for trainable parameters (fp32: 4 + 8 B; bf16-true: 2 + 4 B);
- activations saved for backward at `seq_len` tokens (one image of the tower's tokens inside them), bf16,
  memory-efficient attention (no seq^2 term): per LLM decoder layer and token, 7d + 2d_kv + 4i elements
  (norm inputs/outputs, q/k/v after RoPE, attention output, o_proj input, SwiGLU's four i-wide tensors)
  plus the fp32 copies RMSNorm makes of a bf16 input (2 x 4d bytes); LoRA adds each adapted layer's
  rank-r output (and its dropout copy of the input); trainable towers add 8d + 2i per layer and token;
  the loss is fused with the head (`dsvl.model.fused_loss`): it keeps the final hidden states of the
  supervised positions (seq x d) and holds one chunk of fp32 logits and their gradient (at most 64 MB of
  logits: chunk x vocab x 8 B) at a time, never the full seq x vocab logits. With activation
  checkpointing each layer keeps only its input (d elements per token) plus one layer recomputed at a time;
- 1.5 GiB for the CUDA context, cuBLAS workspaces and allocator slack.
Estimates, not measurements: tests/finetune/test_memory_plan.py checks counts, weight, gradient and
optimizer bytes exactly, and the activation formula within 25% against tensors saved by autograd, on a
tiny model on CPU.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dsvl.cli.models import build_model
from dsvl.cli.presets import model_config  # noqa: E402
from dsvl.model.lora import LoraSettings, apply_lora, is_lora_param  # noqa: E402
from dsvl.model.fused_loss import chunk_positions  # noqa: E402
from dsvl.stages.freezing import apply_freezing  # noqa: E402

GIB = 1024**3
OVERHEAD = 1.5 * GIB
GPUS_GB = (24, 40, 80)
MODELS = {"1.3B": "deepseek_vl_1.3b", "7B": "deepseek_vl_7b"}
LLM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Mode:
    """How a recipe trains: which parts, LoRA or not, and the bytes per weight / gradient / AdamW state."""

    name: str
    trainable: tuple[str, ...]
    lora: bool
    weight_bytes: float  # per parameter (dense)
    grad_bytes: float  # per trainable parameter
    optim_bytes: float  # AdamW: two moments per trainable parameter
    act_bytes: float = 2.0  # activations (bf16 autocast / bf16-true)
    four_bit: bool = False


MODES = {
    "full": Mode("full", ("adaptor", "llm", "vision.low"), False, 4.0, 4.0, 8.0),  # bf16-mixed: fp32 master weights
    "lora": Mode("lora", ("adaptor", "llm"), True, 2.0, 2.0, 4.0),  # bf16-true
    "qlora": Mode("qlora", ("adaptor", "llm"), True, 2.0, 2.0, 4.0, four_bit=True),
}
NF4_BYTES = 0.5 + 0.127 / 8 + 4 / (64 * 256)  # 4-bit + double-quantized absmax per 64 + fp32 per 256 absmax blocks


def meta_model(preset: str | dict[str, Any], mode: Mode, lora: LoraSettings | None = None) -> torch.nn.Module:
    """The preset's model on the meta device with the mode's LoRA and freezing (no weights allocated)."""
    cfg = model_config(preset) if isinstance(preset, str) else preset
    with torch.device("meta"):
        model = build_model(cfg)
        if mode.lora:
            apply_lora(model, lora or LoraSettings(r=16, alpha=32, dropout=0.05, targets={"llm": LLM_TARGETS}))
    apply_freezing(model, mode.trainable)
    return model


def _is_4bit(name: str, param: torch.nn.Parameter) -> bool:
    """QLoRA quantizes the LLM decoder's linear weights (2-D, inside `layers`), never adapters, norms, embeddings or lm_head."""
    return name.startswith("llm.") and ".layers." in name and param.dim() == 2 and not is_lora_param(name)


def state_bytes(model: torch.nn.Module, mode: Mode) -> dict[str, float]:
    """Parameter counts and bytes of weights, gradients and AdamW state."""
    params = trainable = 0
    weights = 0.0
    for name, p in model.named_parameters():
        params += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        weights += p.numel() * (NF4_BYTES if mode.four_bit and _is_4bit(name, p) else mode.weight_bytes)
    return {"params": params, "trainable": trainable, "weights": weights,
            "grads": trainable * mode.grad_bytes, "optimizer": trainable * mode.optim_bytes}


def _llm_layer_elements(cfg: Any, lora: LoraSettings | None) -> float:
    """Saved activation elements per token of one decoder layer (see the module docstring)."""
    d, i = cfg.hidden_size, cfg.intermediate_size
    d_kv = d // cfg.num_attention_heads * (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    elements = 7 * d + 2 * d_kv + 4 * i
    if lora is not None:
        ins = {"q_proj": d, "k_proj": d, "v_proj": d, "o_proj": d, "gate_proj": d, "up_proj": d, "down_proj": i}
        for target in lora.targets.get("llm", []):
            elements += lora.r + (ins.get(target, d) if lora.dropout > 0 else 0)
    return elements


def activation_bytes(model: torch.nn.Module, mode: Mode, seq_len: int, checkpointing: bool,
                     lora: LoraSettings | None = None, transient: bool = True) -> float:
    """Activations kept for backward of one sample of `seq_len` tokens (micro-batch 1), plus (`transient`)
    the loss's one chunk of fp32 logits and their gradient, alive only while the loss runs."""
    cfg = model.llm.config
    b = mode.act_bytes
    layer = _llm_layer_elements(cfg, lora if mode.lora else None) * b * seq_len
    if b < 4:
        layer += 2 * 4 * cfg.hidden_size * seq_len  # RMSNorm's fp32 copies of its bf16 input
    layers = cfg.num_hidden_layers
    llm = (layers * cfg.hidden_size * b * seq_len + layer) if checkpointing else layers * layer
    logits = seq_len * cfg.hidden_size * b + (min(seq_len, chunk_positions(cfg.vocab_size)) * cfg.vocab_size * 8 if transient else 0)
    towers = 0.0
    trainable = {n for n, m in model.parts().items() if any(p.requires_grad for p in m.parameters())}
    low = model.vision.low
    if "vision.low" in trainable and low is not None:
        vc = low.model.config
        tokens = model.num_image_tokens
        per_layer = (8 * vc.hidden_size + 2 * vc.intermediate_size) * b * tokens
        towers = (vc.num_hidden_layers * vc.hidden_size * b * tokens + per_layer) if checkpointing else vc.num_hidden_layers * per_layer
    return llm + logits + towers


def plan(seq_len: int = 4096, lora_r: int = 16) -> list[dict[str, Any]]:
    """One row per model x mode x activation checkpointing, with GiB per term and whether it fits 24/40/80 GB."""
    lora = LoraSettings(r=lora_r, alpha=2 * lora_r, dropout=0.05, targets={"llm": LLM_TARGETS})
    rows = []
    for label, preset in MODELS.items():
        for mode in MODES.values():
            model = meta_model(preset, mode, lora)
            state = state_bytes(model, mode)
            for ckpt in (False, True):
                act = activation_bytes(model, mode, seq_len, ckpt, lora)
                total = state["weights"] + state["grads"] + state["optimizer"] + act + OVERHEAD
                rows.append({"model": label, "mode": mode.name, "checkpointing": ckpt, **state, "activations": act,
                             "total": total, **{f"fits_{g}": total <= g * 1e9 for g in GPUS_GB}})
    return rows


def markdown(rows: list[dict[str, Any]], seq_len: int) -> str:
    head = ("| model | mode | act. ckpt | params | trainable | weights | grads + AdamW | activations | total (est.) | "
            + " | ".join(f"{g} GB" for g in GPUS_GB) + " |")
    lines = [f"Estimated GPU memory per GPU, {seq_len} tokens, micro-batch 1, one GPU (GiB):", "", head,
             "|" + "---|" * (9 + len(GPUS_GB))]
    for r in rows:
        fits = " | ".join("yes" if r[f"fits_{g}"] else "no" for g in GPUS_GB)
        lines.append(
            f"| {r['model']} | {r['mode']} | {'on' if r['checkpointing'] else 'off'} | {r['params'] / 1e9:.2f}B | "
            f"{r['trainable'] / 1e6:.1f}M | {r['weights'] / GIB:.1f} | {(r['grads'] + r['optimizer']) / GIB:.1f} | "
            f"{r['activations'] / GIB:.1f} | {r['total'] / GIB:.1f} | {fits} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--lora-r", type=int, default=16)
    args = parser.parse_args(argv)
    if args.seq_len < 1 or args.lora_r < 1:
        parser.error("--seq-len and --lora-r must be >= 1")
    print(markdown(plan(args.seq_len, args.lora_r), args.seq_len))
    return 0


if __name__ == "__main__":
    sys.exit(main())
