"""Scale benchmark: host memory of building and loading a big preset sharded (FSDP2 over 2 CPU processes, gloo)
against one process holding it whole. `bench_memory()` returns the rows `tools/bench.py --only memory` prints.

Each measurement is a fresh process reporting its own peak RSS (`ru_maxrss`), so imports count on both sides:
- whole: `build_model(cfg)` (meta build + per-unit random init into the full model), then, from the
  `save_pretrained` export that process writes, `build_model({**cfg, "pretrained": dir})` (transformers'
  loader, which maps the file lazily: every weight is then read once, as the first step would);
- sharded: `build_model(cfg, device="meta")`, `fully_shard` per block / part (`shard_model`), then
  `materialize` into the local shards (random init, or the same export read slice by slice).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import copy, os, resource, sys
import torch
torch.set_num_threads(1)
from dsvl.cli.models import build_model
from dsvl.model import materialize, weight_sources
from dsvl.cli.presets import model_config
mode, preset, export = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = model_config(preset)
if mode == "whole-init":
    torch.manual_seed(0)
    model = build_model(cfg)
    print("DSVL_PEAK_RSS_KB=%d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)
    model.save_pretrained(export)  # after the peak is taken: the checkpoint the load rows read
elif mode == "whole-load":
    model = build_model({**cfg, "pretrained": export})
    total = sum(float(p.detach().sum()) for p in model.parameters())  # read every weight (transformers maps the file lazily)
elif mode.startswith("zero3"):  # DeepSpeed ZeRO-3: unit by unit, each partitioned as soon as it is filled
    import deepspeed
    import torch.distributed as dist
    from dsvl.stages.strategies import materialize_zero3
    deepspeed.init_distributed("gloo")
    if mode == "zero3-load":
        cfg = {**cfg, "pretrained": export}
    model, config = build_model(cfg, device="meta"), {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}
    with deepspeed.zero.Init(config_dict_or_path=config):
        materialize_zero3(model, config, seed=0, sources=weight_sources(model))
    dist.barrier()
    dist.destroy_process_group()
else:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from dsvl.stages.strategies import shard_model
    dist.init_process_group("gloo")
    if mode == "sharded-load":
        cfg = {**cfg, "pretrained": export}
    model = build_model(cfg, device="meta")
    template = copy.deepcopy(model)
    shard_model(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    materialize(model, template, seed=0, sources=weight_sources(model))
    dist.barrier()
    dist.destroy_process_group()
os.write(2, b"\nDSVL_PEAK_RSS_KB=%d\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # one write: ranks share stderr
"""


def _peaks(cmd: list[str], env: dict[str, str]) -> tuple[list[float], float]:
    """Peak RSS (GB) each process of `cmd` reported, and the wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    peaks = [int(line.split("=", 1)[1]) / 2**20 for line in proc.stderr.splitlines() if line.startswith("DSVL_PEAK_RSS_KB=")]
    if proc.returncode != 0 or not peaks:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed: {proc.stderr[-3000:]}")
    return peaks, seconds


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_memory(preset: str = "deepseek_vl_1.3b", ranks: int = 2, parts: tuple[str, ...] = ("init", "load"),
                 sharded: str = "sharded") -> dict[str, Any]:
    """Peak RSS per rank of a sharded build / load over `ranks` CPU processes vs one process holding the model whole.
    `sharded`: "sharded" (FSDP2) or "zero3" (DeepSpeed ZeRO-3, needs deepspeed)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out: dict[str, Any] = {"preset": preset, "ranks": ranks, "dtype": "float32", "strategy": sharded}
    with tempfile.TemporaryDirectory(prefix="dsvl-bench-scale-") as tmp:
        export = str(Path(tmp) / "export")
        if "init" not in parts:  # the load rows read the export the whole-init process writes
            _peaks([sys.executable, "-c", CHILD, "whole-init", preset, export], env)
        for what in parts:
            whole, whole_s = _peaks([sys.executable, "-c", CHILD, f"whole-{what}", preset, export], env)
            peaks, sharded_s = _peaks([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                                       "--master_addr", "127.0.0.1", "--master_port", str(_port()),
                                       "--no-python", sys.executable, "-c", CHILD,
                                       f"{sharded}-{what}", preset, export], env)
            out[what] = {"whole_peak_gb": whole[0], "sharded_peak_gb_per_rank": max(peaks),
                         "ratio": max(peaks) / whole[0], "whole_s": whole_s, "sharded_s": sharded_s}
    return out


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Table rows (measure, value, goal, detail) for tools/bench.py."""
    n, preset = result["ranks"], result["preset"]
    out = []
    for what, label, goal in (("init", "build (random init)", "<= 0.65"), ("load", "load from safetensors export", "<= 0.65")):
        if what not in result:
            continue
        r = result[what]
        name = {"sharded": "fsdp2", "zero3": "deepspeed zero-3"}[result.get("strategy", "sharded")]
        out.append((f"{name} {label} peak RSS per rank / full model", f"{r['ratio']:.3f}", goal,
                    f"{preset} fp32, {n} CPU ranks: {r['sharded_peak_gb_per_rank']:.2f} vs {r['whole_peak_gb']:.2f} GB"))
    return out


def bench_resume(samples: int = 20000, consumed: int = 1500, shuffle: int = 1000, repeats: int = 3) -> dict[str, Any]:
    """Seconds to resume a `SourceReader` (seek to a saved position, then read the next sample) after 10x the
    consumed samples over after 1x, on local text shards (~1 KB samples). The position holds byte offsets and the
    shuffle buffer's members, so both resumes read about one buffer (goal <= 1.5)."""
    from dsvl.data.bad_samples import SkipCounter
    from dsvl.data.shards import write_shards
    from dsvl.data.streams import Part, SourceReader, expand_urls

    def reader(urls: list[str]) -> SourceReader:
        return SourceReader("bench", urls, Part(), 0, lambda raw: raw["__key__"], SkipCounter(), shuffle=shuffle)

    out: dict[str, Any] = {"samples": samples, "shuffle": shuffle}
    with tempfile.TemporaryDirectory(prefix="dsvl-bench-resume-") as tmp:
        write_shards(({"__key__": f"s{i:07d}", "txt": "lorem ipsum " * 80} for i in range(samples)), tmp, max_count=1000)
        urls = expand_urls(tmp)
        for label, n in (("1x", consumed), ("10x", 10 * consumed)):
            r = reader(urls)
            for _ in range(n):
                r.next_good()
            position, expected = r.position, r.next_good()[0]
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                resumed = reader(urls)
                resumed.seek(*position)
                got = resumed.next_good()[0]
                best = min(best, time.perf_counter() - start)
                if got != expected:
                    raise RuntimeError(f"resume after {n} samples gave {got}, not {expected}")
            out[label] = {"consumed": n, "resume_s": best}
    out["ratio"] = out["10x"]["resume_s"] / out["1x"]["resume_s"]
    return out


def resume_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    a, b = result["1x"], result["10x"]
    return [("stream resume time, 10x / 1x consumed samples", f"{result['ratio']:.2f}", "<= 1.5",
             f"{b['resume_s'] * 1e3:.0f} vs {a['resume_s'] * 1e3:.0f} ms after {b['consumed']} / {a['consumed']} samples, "
             f"buffer {result['shuffle']}")]
