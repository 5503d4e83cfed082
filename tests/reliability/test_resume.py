"""Exact resume after SIGKILL and after SIGTERM (preemption): the resumed run is the same run, with one history.

One uninterrupted reference run, and one chain on a fixed run dir, 3 micro-batches per global step:
SIGKILL during step 2 (its checkpoint at step 2 is on disk) -> `auto_resume=true` -> SIGTERM after the
middle micro-batch of step 3 (saves at the end of step 3, exits 0) -> `ckpt_path=last` -> done. Every
micro-batch of the chain (modality, sample keys, loss) must equal the reference's from the step each run
resumed at; the chain's `csv/metrics.csv` holds every step once with the reference's values, and its
offline W&B files belong to one run id.
"""
from __future__ import annotations

import csv
import signal

import pytest
import torch
from .conftest import read_records, recorder, run_train_forked, signal_at, stage2

MAX_STEPS = 5
KILL_STEP, TERM_STEP = 2, 3
MICRO = 3  # micro-batches per global step: SIGTERM arrives after the middle one


def _by_step(records: list[dict], start: int, stop: int) -> list[dict]:
    return [r for r in records if start <= r["step"] < stop]


def _same(got: list[dict], want: list[dict]) -> None:
    assert [(r["step"], r["micro"]) for r in got] == [(r["step"], r["micro"]) for r in want]
    for g, w in zip(got, want):
        assert g["modality"] == w["modality"], (g["step"], g["micro"])
        assert g["keys"] == w["keys"], (g["step"], g["micro"])
        assert g["loss"] == pytest.approx(w["loss"], abs=1e-6, rel=0), (g["step"], g["micro"])


@pytest.fixture(scope="module")
def runs(demo_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    ref = run_train_forked(stage2(demo_data, tmp / "ref", *recorder(tmp / "ref.jsonl"), max_steps=MAX_STEPS, micro_batches=MICRO))
    assert ref.returncode == 0, ref.stderr[-3000:]
    chain = tmp / "chain"
    run = lambda *extra: run_train_forked(stage2(demo_data, chain, "logger=many_loggers", *extra, max_steps=MAX_STEPS,  # noqa: E731
                                                 micro_batches=MICRO))
    killed = run(*recorder(tmp / "killed.jsonl"), *signal_at(KILL_STEP, 0, "SIGKILL"))
    resumed = run("auto_resume=true", *recorder(tmp / "resumed.jsonl"), *signal_at(TERM_STEP, 1, "SIGTERM"))
    last_after_term = torch.load(chain / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) \
        if (chain / "checkpoints" / "last.ckpt").exists() else None
    final = run("ckpt_path=last", *recorder(tmp / "final.jsonl"))
    return {"ref": read_records(tmp / "ref.jsonl"), "killed": killed, "killed_rec": read_records(tmp / "killed.jsonl"),
            "resumed": resumed, "resumed_rec": read_records(tmp / "resumed.jsonl"), "term_ckpt": last_after_term,
            "final": final, "final_rec": read_records(tmp / "final.jsonl"), "ref_dir": tmp / "ref", "chain_dir": chain}


def test_reference_mixes_modalities(runs):
    ref = runs["ref"]
    assert sorted({r["step"] for r in ref}) == list(range(MAX_STEPS)) and len(ref) == MICRO * MAX_STEPS
    assert {r["modality"] for r in ref} == {"text", "multimodal"}  # resume must restore both streams


def test_sigkill_then_auto_resume_continues_exactly(runs):
    assert runs["killed"].returncode == -signal.SIGKILL
    killed = runs["killed_rec"]
    _same(_by_step(killed, 0, KILL_STEP), _by_step(runs["ref"], 0, KILL_STEP))
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-3000:]
    resumed = runs["resumed_rec"]
    assert resumed[0]["step"] == KILL_STEP and resumed[0]["micro"] == 0  # nothing repeated, nothing skipped
    _same(_by_step(resumed, KILL_STEP, TERM_STEP + 1), _by_step(runs["ref"], KILL_STEP, TERM_STEP + 1))


def test_sigterm_inside_a_step_saves_at_its_boundary_and_exits_0(runs):
    proc = runs["resumed"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "preempted: saved" in out and "Traceback" not in out
    ckpt = runs["term_ckpt"]
    assert ckpt is not None and ckpt["global_step"] == TERM_STEP + 1  # signalled mid step 3: step 3 completed
    data = ckpt["DSVLDataModule"]
    assert data["next_micro_index"] == MICRO * (TERM_STEP + 1) and set(data["ranks"]["0"]) == {"0", "1"}  # both workers
    assert [r["micro"] for r in runs["resumed_rec"] if r["step"] == TERM_STEP] == list(range(MICRO))
    assert runs["resumed_rec"][-1]["step"] == TERM_STEP  # stopped right after the step it saved


def test_resume_after_sigterm_with_ckpt_path_last_continues_exactly(runs):
    assert runs["final"].returncode == 0, runs["final"].stderr[-3000:]
    final = runs["final_rec"]
    _same(final, _by_step(runs["ref"], TERM_STEP + 1, MAX_STEPS))
    chain_keys = [k for rec in (_by_step(runs["killed_rec"], 0, KILL_STEP), runs["resumed_rec"], final) for r in rec for k in r["keys"]]
    assert chain_keys == [k for r in runs["ref"] for k in r["keys"]]


def _losses(run_dir) -> dict[int, list[float]]:
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open())
    out: dict[int, list[float]] = {}
    for r in rows:
        if r.get("train/loss"):
            out.setdefault(int(r["step"]), []).append(float(r["train/loss"]))
    return out


def test_one_history_across_restarts(runs):
    chain, ref = _losses(runs["chain_dir"]), _losses(runs["ref_dir"])
    assert sorted(chain) == list(range(MAX_STEPS)) and all(len(v) == 1 for v in chain.values())  # each step once
    for step, (loss,) in chain.items():
        assert loss == pytest.approx(ref[step][0], abs=1e-6, rel=0), step
    ids = {p.name for p in (runs["chain_dir"] / "wandb").glob("offline-run-*/run-*.wandb")}
    assert len(ids) == 1 and ids == {f"run-{(runs['chain_dir'] / 'wandb_run_id').read_text().strip()}.wandb"}
