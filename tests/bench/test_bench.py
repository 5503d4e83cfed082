"""`tools/bench.py --quick` runs end to end and produces the table and JSON with sane values.
No timing assertions: the numbers are ratios of a shared machine; what is checked is that every
section measured the same work both ways (same losses, same images, same samples)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dsvl_bench", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finite_positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_quick_bench_prints_table_and_writes_json(bench, demo_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = bench.main(["--quick", "--out", str(out), "--data-dir", str(demo_dir)])
    printed = capsys.readouterr().out
    for row in ("framework overhead", "grouping tiny", "packing: real-token fraction", "packing multimodal", "images/s per worker",
                "demo loader / trainer", "peak RSS"):
        assert row in printed
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["overhead"]["ratio"] == pytest.approx(results["overhead"]["ratio"])

    o = saved["overhead"]
    assert finite_positive(o["ratio"]) and finite_positive(o["hand_step_s"]) and finite_positive(o["lightning_step_s"])
    assert o["max_abs_loss_diff"] < 1e-4  # the Lightning step and the hand loop did the same training
    assert finite_positive(o["loader_over_train"])

    g = saved["grouping"]["tiny"]
    assert finite_positive(g["ratio"])
    # both modes trained on exactly the same samples (so the same images); grouped pads less
    assert g["same_samples"] == 1.0 and g["grouped"]["images"] == g["mixed"]["images"] > 0
    assert 0 <= g["grouped"]["pad_fraction"] < g["mixed"]["pad_fraction"] < 1

    p = saved["packing"]
    for kind in ("text", "multimodal"):  # best fit over the buffer beats greedy stream order on the same samples
        assert p["fill"][kind]["greedy"] < p["fill"][kind]["best_fit"] <= 1.0 and p["fill"][kind]["samples_per_row"] > 1.0
    assert p["step"]["packed"]["pad_fraction"] < p["step"]["unpacked"]["pad_fraction"] and finite_positive(p["step"]["ratio"])
    lm = p["loss_memory"]  # fp32 sums over a 16k vocabulary: equal to ~1e-5 of the loss, not to 1e-4 absolute
    assert lm["max_abs_loss_diff"] < 1e-4 * abs(lm["full"]["loss"]) and finite_positive(lm["ratio"])

    d = saved["images"]
    assert d["max_abs_diff"] < 1e-4 and finite_positive(d["ratio"])  # same tensors as transformers
    assert saved["rss"]["peak_rss_mb"] > 100


def test_cuda_section_code_path_runs_on_cpu(bench, demo_dir, tmp_path):
    """The --device cuda section (tokens/s, MFU) on the CPU with a given peak, tiny model only."""
    import torch

    threads = torch.get_num_threads()
    try:
        out = bench.bench_cuda(demo_dir, tmp_path, ("tiny",), steps=2, device="cpu", peak_tflops=1.0, micro=2, seq=128)
    finally:
        torch.set_num_threads(threads)
    tiny = out["tiny"]
    assert tiny["tokens_per_step"] == 2 * 128  # padded to max_length
    assert finite_positive(tiny["tokens_per_s"]) and 0 < tiny["mfu"] < 1
