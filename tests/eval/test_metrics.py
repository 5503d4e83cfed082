"""Metric arithmetic, per-category accuracy, key dedupe and DDP sync (two gloo processes)."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dsvl.eval.metrics import MultimodalLoss, MultipleChoiceAccuracy, TextPerplexity
from dsvl.eval.scoring import sequence_nll
from ..forked import free_port

INF = float("inf")


def test_mc_accuracy_per_category_and_missing_options() -> None:
    metric = MultipleChoiceAccuracy()
    # sample 0: lowest = option 1 (right); sample 1: option 2 lowest (wrong, answer 0);
    # sample 2 has only 2 options (inf padding), lowest = 0 (right)
    nll = torch.tensor([[2.0, 0.5, 3.0, 1.0], [1.0, 2.0, 0.1, 4.0], [0.3, 0.9, INF, INF]])
    metric.update(nll, torch.tensor([1, 0, 0]), categories=["color", "color", "count"], keys=["a", "b", "c"])
    metric.update(torch.tensor([[0.2, float("nan")]]), torch.tensor([1]), categories=["count"], keys=["d"])
    assert metric.compute().item() == pytest.approx(2 / 4)
    summary = metric.summary()
    assert summary["num_samples"] == 4
    assert summary["per_category"] == {
        "color": {"accuracy": 0.5, "num_samples": 2},
        "count": {"accuracy": 0.5, "num_samples": 2},
    }
    metric.reset()
    assert math.isnan(metric.compute().item())


def test_mc_accuracy_counts_each_key_once() -> None:
    metric = MultipleChoiceAccuracy()
    metric.update(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), keys=["x"])
    metric.update(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0]), keys=["x", "y"])
    assert metric.summary()["num_samples"] == 2
    assert metric.compute().item() == pytest.approx(0.5)
    # without keys nothing is merged
    metric.reset()
    metric.update(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert metric.summary()["num_samples"] == 2


def test_mc_accuracy_rejects_bad_input() -> None:
    metric = MultipleChoiceAccuracy()
    with pytest.raises(ValueError, match="out of range"):
        metric.update(torch.zeros(1, 2), torch.tensor([2]))
    with pytest.raises(ValueError, match="categories"):
        metric.update(torch.zeros(2, 2), torch.tensor([0, 1]), categories=["a"])
    with pytest.raises(ValueError, match="mode"):
        MultipleChoiceAccuracy(mode="words")


def test_token_mean_metrics_weight_by_tokens() -> None:
    ppl, mm = TextPerplexity(), MultimodalLoss()
    for metric in (ppl, mm):
        metric.update(torch.tensor(1.0), 3)
        metric.update(torch.tensor(2.0), 1)
        metric.update(torch.tensor(float("nan")), 0)  # a batch without supervised tokens
    assert mm.compute().item() == pytest.approx((3 * 1.0 + 2.0) / 4)
    assert ppl.compute().item() == pytest.approx(math.exp(5 / 4))


def test_sequence_nll_matches_loop() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 3, 4, -100, 1], [-100, -100, -100, 6, -100]])
    sums, counts = sequence_nll(logits, labels)
    for r in range(2):
        want = sum(
            -torch.log_softmax(logits[r, t - 1], -1)[labels[r, t]].item() for t in range(1, 5) if labels[r, t] != -100
        )
        assert sums[r].item() == pytest.approx(want, rel=1e-5)
    assert counts.tolist() == [3, 1]


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        mc, ppl = MultipleChoiceAccuracy(), TextPerplexity()
        if rank == 0:  # a, b right; c wrong
            mc.update(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]),
                      categories=["x", "x", "y"], keys=["a", "b", "c"])
            ppl.update(torch.tensor(1.0), 2)
        else:  # d wrong; "a" repeated by the sampler's padding must not count again
            mc.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]),
                      categories=["y", "x"], keys=["d", "a"])
            ppl.update(torch.tensor(3.0), 2)
        # a metric that only rank 0 fed: the idle rank still takes part in the sync
        lonely = MultipleChoiceAccuracy()
        if rank == 0:
            lonely.update(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), categories=["z"], keys=["only"])
        queue.put((rank, mc.compute().item(), mc.summary(), ppl.compute().item(), lonely.summary()))
    finally:
        dist.destroy_process_group()


def test_ddp_sync_two_processes_no_double_counting() -> None:
    # fork, not spawn: a spawned child re-imports torch and torchmetrics (~10 s on a busy 2-core box);
    # the children only run tiny single-threaded ops and gloo collectives, which are fork-safe
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    for _rank, acc, summary, ppl, lonely in results:
        assert lonely["num_samples"] == 1 and lonely["per_category"] == {"z": {"accuracy": 1.0, "num_samples": 1}}
        assert acc == pytest.approx(2 / 4)
        assert summary["num_samples"] == 4
        assert summary["per_category"] == {
            "x": {"accuracy": 1.0, "num_samples": 2},
            "y": {"accuracy": 0.0, "num_samples": 2},
        }
        assert ppl == pytest.approx(math.exp((2 * 1.0 + 2 * 3.0) / 4), rel=1e-6)
