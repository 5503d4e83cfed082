"""Grouped batching across simulated ranks and workers; exact resume from state_dict."""
from __future__ import annotations

import itertools

import pytest
from .conftest import pretrain_sources

from dsvl.data import DSVLDataModule, ModalitySchedule
from dsvl.data.grouped import BatchingConfig, GlobalStepBatches
from dsvl.data.mixture import parse_sources


def _dm(demo_dir, spec, **kw):
    args = dict(tokenizer=str(demo_dir / "tokenizer"), train_sources=pretrain_sources(demo_dir), vision_spec=spec,
                micro_batch_size=3, max_length=200, packing=True, mode="grouped",
                schedule=dict(start=1.0, target=0.5, warmup_steps=6), accumulate_grad_batches=2,
                system_prompt=None, shuffle_buffer=20, seed=3)
    args.update(kw)
    return DSVLDataModule(**args)


def test_two_ranks_disjoint_samples_same_modality(demo_dir, hybrid_spec):
    dm = _dm(demo_dir, hybrid_spec, packing=False)  # stays inside epoch 0 (parts are disjoint per epoch)
    ranks = [GlobalStepBatches(dm.train_sources, dm.encoder, dm.schedule, dm.batching(), rank=r, world_size=2)
             for r in range(2)]
    batches = [list(itertools.islice(iter(d), 40)) for d in ranks]  # 20 global steps
    seen: list[set[str]] = [set(), set()]
    for b0, b1 in zip(*batches):
        assert b0["state"]["step"] == b1["state"]["step"]
        assert b0["modality"] == b1["modality"] == dm.schedule.modality(b0["state"]["step"])
        for r, b in enumerate((b0, b1)):
            assert len(set(b["keys"])) == len(b["keys"])
            seen[r].update(b["keys"])
    assert all(p[0] == 0 for b in batches[0] + batches[1] for m in b["state"]["position"]["streams"].values()
               for p in m["positions"].values())
    assert len(seen[0]) == len(seen[1]) == 120 and not (seen[0] & seen[1])
    # micro-batches of one global step share its modality; steps follow the schedule
    mods = [b["modality"] for b in batches[0]]
    assert all(mods[2 * s] == mods[2 * s + 1] for s in range(20))
    assert mods[:6] == ["text"] * 6 and "multimodal" in mods[6:]
    mm = next(b for b in batches[0] if b["modality"] == "multimodal")
    assert mm["pixel_values"].shape[1:] == (3, 32, 32) and mm["high_res_pixel_values"].shape[1:] == (3, 64, 64)
    assert mm["pixel_values"].shape[0] == mm["stats"]["images"] == int((mm["input_ids"] == dm.image_token_id).sum()) // 4
    assert "position_ids" not in mm  # only text steps are packed (here: packing off)


def test_same_seed_same_stream_different_seed_differs(demo_dir, hybrid_spec):
    def keys(seed):
        dm = _dm(demo_dir, hybrid_spec, seed=seed)
        return [b["keys"] for b in itertools.islice(iter(dm.train_dataset()), 16)]

    assert keys(3) == keys(3)
    assert keys(3) != keys(4)


def _consume(dm, it, n):
    out = []
    for _ in range(n):
        b = dm.record(next(it))
        out.append(b)
    return out


@pytest.mark.parametrize("num_workers,consumed", [(0, 13), (2, 13), (2, 10)])
def test_state_dict_round_trip_resumes_at_next_sample(demo_dir, hybrid_spec, num_workers, consumed):
    dm = _dm(demo_dir, hybrid_spec, num_workers=num_workers)
    it = iter(dm.train_dataloader())
    first = _consume(dm, it, consumed)
    assert "state" not in first[0]  # stripped before the model sees the batch
    state = dm.state_dict()
    expected = [b["keys"] for b in _consume(dm, it, 6)]
    dm2 = _dm(demo_dir, hybrid_spec, num_workers=num_workers)
    dm2.load_state_dict(state)
    got = [b["keys"] for b in _consume(dm2, iter(dm2.train_dataloader()), 6)]
    assert got == expected
    assert dm2._next_micro_index // dm2._accumulate() == (consumed + 6) // 2


def test_modes_and_config_errors(demo_dir, hybrid_spec):
    dm = _dm(demo_dir, hybrid_spec, mode="text_only", packing=False)
    b = next(iter(dm.train_dataset()))
    assert b["modality"] == "text" and b["input_ids"].shape[0] == 3 and "pixel_values" not in b
    mixed = _dm(demo_dir, hybrid_spec, mode="mixed", schedule=dict(start=0.5, target=0.5))
    mb = list(itertools.islice(iter(mixed.train_dataset()), 4))
    assert sum(b["stats"]["images"] > 0 for b in mb) >= 3
    assert {b["modality"] for b in mb} == {"mixed"}
    text_only_sources = parse_sources({"t": pretrain_sources(demo_dir)["text"]})
    with pytest.raises(ValueError, match="multimodal"):
        GlobalStepBatches(text_only_sources, dm.encoder, ModalitySchedule(1.0, 0.7, 10), BatchingConfig())
    with pytest.raises(ValueError, match="mode"):
        _dm(demo_dir, hybrid_spec, mode="interleave")


def test_mixture_weights_are_tracked(demo_dir, hybrid_spec):
    dm = _dm(demo_dir, hybrid_spec, mode="multimodal_only", micro_batch_size=10, packing=False)  # one sample a row
    keys = [k for b in itertools.islice(iter(dm.train_dataset()), 10) for k in b["keys"]]
    n_caption = sum(k.startswith("pretrain_caption") for k in keys)
    assert n_caption == 60  # weights 0.6 / 0.4 over 100 samples, exactly by the quota rule


def test_accounting_tracks_the_schedule(demo_dir, hybrid_spec):
    dm = _dm(demo_dir, hybrid_spec, packing=False, schedule=dict(start=1.0, target=0.5, warmup_steps=0),
             accumulate_grad_batches=1, micro_batch_size=2)
    it = iter(dm.train_dataloader())
    batches = _consume(dm, it, 30)
    acc = dm.accounting.as_dict()
    assert acc["text/steps"] + acc["multimodal/steps"] == 30
    assert abs(acc["language_ratio"] - 0.5) <= 1 / 30
    assert acc["multimodal/images"] == sum(b["stats"]["images"] for b in batches)
    assert acc["text/tokens"] == sum(int(b["attention_mask"].sum()) for b in batches if b["modality"] == "text")
    assert dm.state_dict()["accounting"]["totals"]["text"]["steps"] == acc["text/steps"]


def test_multimodal_sources_need_a_vision_spec(demo_dir):
    with pytest.raises(ValueError, match="vision_spec"):
        _dm(demo_dir, None)
    assert _dm(demo_dir, None, mode="text_only").mode == "text_only"


def test_missing_shards_are_a_config_error(demo_dir, hybrid_spec, tmp_path):
    from dsvl.data import DataError

    sources = pretrain_sources(demo_dir)
    sources["text"] = {"urls": str(tmp_path / "nowhere" / "*.tar"), "modality": "text"}
    dm = _dm(demo_dir, hybrid_spec, train_sources=sources)
    with pytest.raises(DataError, match="'text': no shards"):
        dm.train_dataloader()


def test_validation_batches_cover_each_sample_once_across_ranks(demo_dir, hybrid_spec):
    from dsvl.data import EvalBatches

    dm = _dm(demo_dir, hybrid_spec)
    sources = parse_sources(pretrain_sources(demo_dir, "val"))
    per_rank = [[b for b in EvalBatches(sources, dm.encoder, 16, rank=r, world_size=2)] for r in range(2)]
    keys = [k for batches in per_rank for b in batches for k in b["keys"]]
    assert len(keys) == len(set(keys)) == 3 * 40
    for batches in per_rank:
        mods = [b["modality"] for b in batches]
        assert mods == sorted(mods, key=lambda m: m != "text")  # text first, then multimodal
    again = [b["keys"] for b in EvalBatches(sources, dm.encoder, 16, rank=0, world_size=2)]
    assert again == [b["keys"] for b in per_rank[0]]


def test_vision_spec_from_config_mapping(demo_dir, hybrid_spec):
    from dataclasses import asdict

    dm = _dm(demo_dir, asdict(hybrid_spec))
    assert dm.vision == hybrid_spec


# --- elastic resume: the global micro-batch sequence does not depend on ranks x workers ----------------------
MICRO_PER_STEP, STEPS, STOP = 2, 6, 3  # global batch = 2 micro-batches of 3 samples


def _layout_dms(demo_dir, spec, ranks, workers, state=None, **kw):
    """One datamodule per simulated rank of a (ranks, workers) layout, the same global batch, optionally resumed."""
    dms = []
    for r in range(ranks):
        dm = _dm(demo_dir, spec, num_workers=workers, accumulate_grad_batches=MICRO_PER_STEP // ranks, packing_buffer=8, **kw)
        dm._rank_world = lambda r=r: (r, ranks)
        if state is not None:
            dm.load_state_dict(state)
        dms.append(dm)
    return dms


def _run(dms, steps):
    """(step, modality, keys) of every micro-batch in global order (g = i * ranks + r), and the gathered state."""
    its = [iter(dm.train_dataloader()) for dm in dms]
    seen = []
    for _ in range(steps * MICRO_PER_STEP // len(dms)):
        for dm, it in zip(dms, its):
            b = next(it)
            step = b["state"]["step"]
            dm.record(b)
            seen.append((step, b["modality"], b["keys"]))
    states = [dm.state_dict() for dm in dms]
    merged = dict(states[0], ranks={r: s for st in states for r, s in st["ranks"].items()})
    return seen, merged


LAYOUTS = {"2 ranks": (2, 0), "1 rank, 2 workers": (1, 2), "1 rank": (1, 0)}


def test_resume_on_another_layout_continues_the_global_sequence(demo_dir, hybrid_spec):
    full, _ = _run(_layout_dms(demo_dir, hybrid_spec, 2, 0), STEPS)
    assert [s for s, _, _ in full] == [s for s in range(STEPS) for _ in range(MICRO_PER_STEP)]
    assert {m for _, m, _ in full} == {"text", "multimodal"}
    halves = {}
    for name, (ranks, workers) in LAYOUTS.items():  # data.parts=2 on every layout (the 2-rank run's default)
        first, state = _run(_layout_dms(demo_dir, hybrid_spec, ranks, workers, parts=2), STOP)
        assert first == full[:STOP * MICRO_PER_STEP], name
        assert state["parts"] == 2 and sorted(p for r in state["ranks"].values() for p in r) == ["0", "1"]
        halves[name] = state
    names = list(LAYOUTS)
    for src, dst in zip(names, names[1:] + names[:1]):  # each layout resumes another's checkpoint
        rest, _ = _run(_layout_dms(demo_dir, hybrid_spec, *LAYOUTS[dst], state=halves[src]), STEPS - STOP)
        assert rest == full[STOP * MICRO_PER_STEP:], (src, dst)


def test_layouts_that_cannot_continue_the_parts_fail_unless_elastic_restart(demo_dir, hybrid_spec, caplog):
    from dsvl.data import DataError

    _, state = _run(_layout_dms(demo_dir, hybrid_spec, 2, 0, packing=False), 1)
    (dm,) = _layout_dms(demo_dir, hybrid_spec, 1, 3, state=state, packing=False)
    with pytest.raises(DataError, match=r"1 ranks x 3 workers cannot continue the checkpoint's 2 data parts .*\[1, 2\]"):
        dm.train_dataloader()
    (dm,) = _layout_dms(demo_dir, hybrid_spec, 1, 0, state=state, packing=False, parts=4)
    with pytest.raises(DataError, match="data.parts=4 but the checkpoint's data is split into 2 parts"):
        dm.train_dataloader()
    with pytest.raises(DataError, match=r"data.parts=3 cannot be built by 2 ranks x 1 workers.*\[1, 3\]"):
        _layout_dms(demo_dir, hybrid_spec, 2, 0, parts=3)[0].train_dataloader()
    with pytest.raises(DataError, match=r"data.parts must be >= 1 or null, got -2"):  # the Python API, no schema
        _layout_dms(demo_dir, hybrid_spec, 1, 0, parts=-2)
    (dm,) = _layout_dms(demo_dir, hybrid_spec, 1, 0, state=state, packing=False, parts=3, elastic_restart=True)
    it = iter(dm.train_dataloader())
    assert "data.elastic_restart" in caplog.text and dm.record(next(it)) and dm._next_micro_index // dm._accumulate() == 1
    assert dm.state_dict()["parts"] == 3  # the restarted streams are split as this run asks
    old = {k: v for k, v in state.items() if k not in ("parts", "micro_batches_per_step")} | {"version": 1}
    with pytest.raises(DataError, match=r"^the checkpoint's data state is version 1, this dsvl reads version 2 \("):
        _layout_dms(demo_dir, hybrid_spec, 1, 0, state=old, elastic_restart=True)  # positions per rank: refused


def test_mixed_mode_sequence_does_not_depend_on_ranks(demo_dir, hybrid_spec):
    kw = dict(mode="mixed", schedule=dict(start=0.7, target=0.7), packing=False)
    two, state = _run(_layout_dms(demo_dir, hybrid_spec, 2, 0, **kw), 2)
    one, _ = _run(_layout_dms(demo_dir, hybrid_spec, 1, 0, parts=2, **kw), 2)
    assert one == two
    rest, _ = _run(_layout_dms(demo_dir, hybrid_spec, 1, 0, state=state, **kw), 1)
    more, _ = _run(_layout_dms(demo_dir, hybrid_spec, 2, 0, **kw), 3)
    assert rest == more[4:]
