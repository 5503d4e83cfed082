"""LoRA composes with DDP and FSDP2: 2 CPU processes (gloo; forked with torchrun's worker environment by
tests/forked.py) fine-tune a tiny released-like checkpoint; the adapter is written once in peft's format, the
checkpoint holds adapter weights only, and the merged export loads in transformers."""
from __future__ import annotations

from pathlib import Path

import pytest

from ..forked import run_ranks
from . import lora_dist_worker


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_trains_under_ddp_and_fsdp2(strategy: str, released, demo_data: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from dsvl.model.safe_load import safe_torch_load

    out = tmp_path / strategy
    proc = run_ranks(lora_dist_worker.main, ["lora_dist_worker.py", "--strategy", strategy, "--pretrained",
                                             str(released["deepseek_vl"]), "--data", str(demo_data), "--out", str(out)], 2,
                     timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)
    last = out / "checkpoints" / "last.ckpt"
    if strategy == "fsdp":  # a sharded (DCP) checkpoint: its keys are in the metadata
        from torch.distributed.checkpoint import FileSystemReader

        keys = [k.removeprefix("state_dict.") for k in FileSystemReader(str(last)).read_metadata().state_dict_metadata]
    else:
        keys = list(safe_torch_load(last)["state_dict"])
    llm = [k for k in keys if k.startswith("model.llm.")]
    assert llm and all("lora_" in k for k in llm), llm[:3]  # the LLM appears only through its adapters
    if strategy == "ddp":  # FSDP2 exports go through tools/consolidate_checkpoint.py
        AutoModelForImageTextToText.from_pretrained(out / "export")  # the merged model is a transformers directory
