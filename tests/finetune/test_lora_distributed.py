"""LoRA composes with DDP and FSDP2: 2 CPU processes (torchrun, gloo) fine-tune a tiny released-like
checkpoint; the adapter is written once in peft's format, the checkpoint holds adapter weights only,
and the merged export loads in transformers."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_trains_under_ddp_and_fsdp2(strategy: str, released, demo_data: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from dsvl.model.safe_load import safe_torch_load

    out = tmp_path / strategy
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "lora_dist_worker.py"), "--strategy", strategy,
           "--pretrained", str(released["deepseek_vl"]), "--data", str(demo_data), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
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
