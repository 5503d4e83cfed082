"""Test helper run under `torchrun --nproc_per_node 2` (gloo, CPU): the tiny model built on meta and materialised
unit by unit under DeepSpeed ZeRO-3 (`materialize_zero3`, inside `deepspeed.zero.Init` as Lightning calls
`configure_model`), against the same model built whole in this process with the same seed: each
rank's partition of every parameter (`ds_tensor`) is the right slice of the whole model's, gathered they are the
whole model, buffers equal. The same for loading saved checkpoints (`model.pretrained` export, `init_from` `.ckpt`,
`init_from` a sharded DCP directory). The most parameter elements held whole during a build are recorded. Then a
stage fits 2 steps under Lightning's `DeepSpeedStrategy` (stage 3, made to run on CPU by `zero3_cpu`): the model
comes to `configure_model` on meta. Writes `<out>/rank<r>.json`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from meta_worker import save_checkpoints, tensors, whole_tensors  # noqa: E402
from sharded_ckpt import save_sharded  # noqa: E402
from zero3_cpu import CPUDeepSpeedStrategy, skip_jit_ops  # noqa: E402

CONFIG = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}


def zero3_build(cfg: dict, seed: int, sources=(), config: dict = CONFIG) -> tuple[torch.nn.Module, int]:
    """The model partitioned unit by unit as `configure_model` does it (inside `deepspeed.zero.Init`, as Lightning
    calls it); and the most parameter elements it held whole at once (counted before each unit is partitioned)."""
    import deepspeed

    from dsvl.cli.models import build_model
    from dsvl.stages import strategies

    model, peak, partitioner = build_model(cfg, device="meta"), [0], strategies.zero3_partitioner

    def counting(config: dict):
        partition = partitioner(config)

        def counted(params: list[torch.nn.Parameter]) -> None:
            peak[0] = max(peak[0], sum(p.numel() for p in model.parameters() if not p.is_meta and not hasattr(p, "ds_id")))
            partition(params)

        return counted

    strategies.zero3_partitioner = counting
    try:
        with deepspeed.zero.Init(config_dict_or_path=config):
            strategies.materialize_zero3(model, config, seed=seed, sources=list(sources))
    finally:
        strategies.zero3_partitioner = partitioner
    return model, peak[0]


def mismatches(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> dict:
    """Names whose partition (or buffer) differs from the whole model's, then the same after gathering."""
    import deepspeed

    rank, world = dist.get_rank(), dist.get_world_size()
    local = tensors(model)
    bad, partitioned = sorted(set(reference) ^ set(local)), 0
    for name, t in local.items():
        if name not in reference:
            continue
        if hasattr(t, "ds_tensor"):  # this rank's flat slice (the last one zero-padded)
            partitioned += int(t.numel() == 0 and t.ds_tensor.numel() * world >= t.ds_numel)
            size = t.ds_tensor.numel()
            expected = reference[name].flatten()[rank * size:(rank + 1) * size].to(t.ds_tensor.dtype)  # bf16 config: cast
            ok = torch.equal(t.ds_tensor.flatten()[:expected.numel()], expected) and tuple(t.ds_shape) == reference[name].shape
        else:
            ok = torch.equal(t, reference[name])
        if not ok:
            bad.append(name)
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        gathered = sorted(n for n, t in tensors(model).items() if n in reference and not torch.equal(t, reference[n].to(t.dtype)))
    return {"mismatches": bad, "gathered_mismatches": gathered, "partitioned": partitioned,
            "dtypes": sorted({str(p.ds_tensor.dtype) for p in model.parameters() if hasattr(p, "ds_tensor")}),
            "parameters": sum(1 for _ in model.parameters()),
            "tied": model.llm.lm_head.weight is model.llm.get_input_embeddings().weight}


def fit(cfg: dict, out: Path) -> dict:
    """Two optimizer steps of the language-model part on random text; what changed. Then the DeepSpeed checkpoint it
    saves (`out/ds.ckpt`, checked by dsvl as a resume source) resumes for 2 more steps; the trained weights, gathered,
    are `out/trained.pt` (rank 0)."""
    import deepspeed
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    from dsvl.cli.models import build_model
    from dsvl.stages.pretrain import PretrainStage

    torch.manual_seed(7)
    initial = whole_tensors(build_model(cfg))
    stage = PretrainStage(model=build_model(cfg, device="meta"), model_config=cfg, trainable=["llm"])
    ids = torch.randint(0, 1000, (8, 16), generator=torch.Generator().manual_seed(1))
    loader = DataLoader([{"input_ids": row, "labels": row} for row in ids], batch_size=2)
    def trainer(max_steps: int) -> Trainer:
        strategy = CPUDeepSpeedStrategy(stage=3)
        strategy.config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # the tiny model's too: partitioned
        return Trainer(strategy=strategy, accelerator="cpu", devices=2, max_steps=max_steps, logger=False,
                       enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)

    first = trainer(2)
    first.fit(stage, train_dataloaders=loader)
    first.save_checkpoint(out / "ds.ckpt")
    model = stage.model
    whole = sum(p.numel() for p in model.parameters())  # the partitioned ones hold 0 elements
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        changed = sorted({n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, initial[n])})
        if dist.get_rank() == 0:
            torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, out / "trained.pt")
    resumed = trainer(4)  # the checkpoint dsvl's resume path accepts (tests: check_checkpoint) continues the run
    resumed.fit(PretrainStage(model=build_model(cfg, device="meta"), model_config=cfg, trainable=["llm"]),
                train_dataloaders=loader, ckpt_path=str(out / "ds.ckpt"))
    return {"global_step": first.global_step, "loss": float(first.callback_metrics["train/loss"]),
            "zero_params": all(hasattr(p, "ds_tensor") for p in model.parameters()), "whole_elements": whole,
            "total": sum(t.numel() for n, t in initial.items() if n in dict(model.named_parameters())), "changed_parts": changed,
            "resumed_step": resumed.global_step}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    import deepspeed

    from dsvl.cli.models import build_model
    from dsvl.model import weight_sources
    from dsvl.cli.presets import model_config
    from dsvl.stages.strategies import checkpoint_source

    skip_jit_ops()
    deepspeed.init_distributed("gloo")
    rank, out = dist.get_rank(), Path(args.out)
    report: dict = {}
    for tie in (False, True):
        cfg = model_config("tiny", [f"model.llm.tie_word_embeddings={str(tie).lower()}"])
        torch.manual_seed(7)
        whole = build_model(cfg)  # the 1-process path, global seed 7
        model, peak = zero3_build(cfg, seed=7)
        report[f"init_tie{tie}"] = {**mismatches(model, whole_tensors(whole)), "peak": peak,
                                    "total": sum(p.numel() for p in whole.parameters())}
    # a bf16 config trains bf16 partitions (as DeepSpeed casts modules built inside zero.Init): the same values, cast
    model, _ = zero3_build(cfg, seed=7, config={**CONFIG, "bf16": {"enabled": True}})
    report["init_bf16"] = mismatches(model, whole_tensors(whole))

    # loading: rank 0 writes checkpoints of a model with seed 11, every rank then loads them unit by unit
    cfg = model_config("tiny")
    saved, reference = save_checkpoints(cfg, out)
    if rank == 0:
        save_sharded(out / "dcp.ckpt", saved.state_dict())
    dist.barrier()
    pretrained = {**cfg, "pretrained": str(out / "export")}
    for name, c, sources in (("model.pretrained", pretrained, weight_sources(build_model(pretrained, device="meta"))),
                             ("ckpt", cfg, [checkpoint_source(out / "last.ckpt")]),
                             ("dcp", cfg, [checkpoint_source(out / "dcp.ckpt")])):
        model, peak = zero3_build(c, seed=0, sources=sources)
        report[f"load_{name}"] = {**mismatches(model, reference), "peak": peak}
    report["fit"] = fit(cfg, out)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
