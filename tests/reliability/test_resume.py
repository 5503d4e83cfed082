"""Exact resume after SIGKILL and after SIGTERM (preemption): the resumed run is the same run.

One uninterrupted reference run, and one chain on a fixed run dir: SIGKILL during step 2 (its
checkpoint at step 2 is on disk) -> `ckpt_path=last` -> SIGTERM during step 3 (saves at the end of
step 3, exits 0) -> `auto_resume=true` -> done. Every micro-batch of the chain (modality, sample keys,
loss) must equal the reference's from the step each run resumed at.
"""
from __future__ import annotations

import signal

import pytest
import torch
from .conftest import read_records, recorder, run_train_forked, signal_at, stage2

MAX_STEPS = 5
KILL_STEP, TERM_STEP = 2, 3


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
    ref = run_train_forked(stage2(demo_data, tmp / "ref", *recorder(tmp / "ref.jsonl"), max_steps=MAX_STEPS))
    assert ref.returncode == 0, ref.stderr[-3000:]
    chain = tmp / "chain"
    killed = run_train_forked(stage2(demo_data, chain, *recorder(tmp / "killed.jsonl"), *signal_at(KILL_STEP, 0, "SIGKILL"),
                              max_steps=MAX_STEPS))
    resumed = run_train_forked(stage2(demo_data, chain, "ckpt_path=last", *recorder(tmp / "resumed.jsonl"),
                               *signal_at(TERM_STEP, 0, "SIGTERM"), max_steps=MAX_STEPS))
    last_after_term = torch.load(chain / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) \
        if (chain / "checkpoints" / "last.ckpt").exists() else None
    final = run_train_forked(stage2(demo_data, chain, "auto_resume=true", *recorder(tmp / "final.jsonl"), max_steps=MAX_STEPS))
    return {"ref": read_records(tmp / "ref.jsonl"), "killed": killed, "killed_rec": read_records(tmp / "killed.jsonl"),
            "resumed": resumed, "resumed_rec": read_records(tmp / "resumed.jsonl"), "term_ckpt": last_after_term,
            "final": final, "final_rec": read_records(tmp / "final.jsonl")}


def test_reference_mixes_modalities(runs):
    ref = runs["ref"]
    assert sorted({r["step"] for r in ref}) == list(range(MAX_STEPS)) and len(ref) == 2 * MAX_STEPS
    assert {r["modality"] for r in ref} == {"text", "multimodal"}  # resume must restore both streams


def test_sigkill_then_ckpt_path_last_continues_exactly(runs):
    assert runs["killed"].returncode == -signal.SIGKILL
    killed = runs["killed_rec"]
    _same(_by_step(killed, 0, KILL_STEP), _by_step(runs["ref"], 0, KILL_STEP))
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-3000:]
    resumed = runs["resumed_rec"]
    assert resumed[0]["step"] == KILL_STEP and resumed[0]["micro"] == 0  # nothing repeated, nothing skipped
    _same(_by_step(resumed, KILL_STEP, TERM_STEP + 1), _by_step(runs["ref"], KILL_STEP, TERM_STEP + 1))


def test_sigterm_saves_at_step_boundary_and_exits_0(runs):
    proc = runs["resumed"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "preempted: saved" in out and "Traceback" not in out
    ckpt = runs["term_ckpt"]
    assert ckpt is not None and ckpt["global_step"] == TERM_STEP + 1  # signalled mid step 3: step 3 completed
    data = ckpt["DSVLDataModule"]
    assert data["next_micro_index"] == 2 * (TERM_STEP + 1) and set(data["ranks"]["0"]) == {"0", "1"}  # both workers
    assert runs["resumed_rec"][-1]["step"] == TERM_STEP  # stopped right after the step it saved


def test_resume_after_sigterm_continues_exactly(runs):
    assert runs["final"].returncode == 0, runs["final"].stderr[-3000:]
    final = runs["final_rec"]
    _same(final, _by_step(runs["ref"], TERM_STEP + 1, MAX_STEPS))
    chain_keys = [k for rec in (_by_step(runs["killed_rec"], 0, KILL_STEP), runs["resumed_rec"], final) for r in rec for k in r["keys"]]
    assert chain_keys == [k for r in runs["ref"] for k in r["keys"]]
