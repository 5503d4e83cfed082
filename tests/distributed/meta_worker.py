"""Test helper run under `torchrun --nproc_per_node 2` (gloo, CPU): the tiny model built on meta, sharded with
FSDP2 and materialised per shard, against the same model built whole in this process with the same seed; then
the same for loading saved checkpoints (a sharded DCP checkpoint written by 2 ranks and by 1, a transformers export,
a Lightning-style `.ckpt`, `model.pretrained`, per-part `pretrained`). Every parameter and buffer is compared. Writes `<out>/rank<r>.json` with what it compared."""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.distributed as dist


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, tied and non-persistent ones included (rotary `inv_freq`, `position_ids`)."""
    return dict([*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)])


def whole_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tensors(model).items()}


def local_mismatches(sharded: torch.nn.Module, reference: dict[str, torch.Tensor]) -> tuple[list[str], int]:
    """Names whose local shard differs from the same slice of the whole model's tensor (or that one of the two lacks);
    and how many were sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    local_tensors = tensors(sharded)
    bad, n_sharded = sorted(set(reference) ^ set(local_tensors)), 0
    for name, t in local_tensors.items():
        if name not in reference:
            continue
        t = t.detach()
        if isinstance(t, DTensor):
            n_sharded += 1
            expected = distribute_tensor(reference[name], t.device_mesh, t.placements, src_data_rank=None).to_local()
            local = t.to_local()
        else:
            expected, local = reference[name], t
        if local.shape != expected.shape or not torch.equal(local, expected):
            bad.append(name)
    return bad, n_sharded


def sharded_build(cfg: dict, mesh, seed: int, sources=()) -> torch.nn.Module:
    from dsvl.cli.models import build_model
    from dsvl.model import materialize
    from dsvl.stages.strategies import shard_model

    model = build_model(cfg, device="meta")
    template = copy.deepcopy(model)
    shard_model(model, mesh=mesh)
    return materialize(model, template, seed=seed, sources=list(sources))


def save_checkpoints(cfg: dict, out: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The model of `cfg` with seed 11, saved by rank 0 as a transformers export (`<out>/export`) and a Lightning-style
    `<out>/last.ckpt`; and its tensors. Every rank returns once both are written."""
    from dsvl.cli.models import build_model

    torch.manual_seed(11)
    saved = build_model(cfg)
    if dist.get_rank() == 0:
        saved.save_pretrained(out / "export")
        torch.save({"state_dict": {f"model.{k}": v for k, v in saved.state_dict().items()}, "global_step": 3}, out / "last.ckpt")
    dist.barrier()
    return saved, whole_tensors(saved)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from torch.distributed.device_mesh import init_device_mesh

    from dsvl.cli.models import build_model
    from dsvl.model import weight_sources
    from dsvl.cli.presets import model_config
    from dsvl.stages.strategies import checkpoint_source

    rank, out = dist.get_rank(), Path(args.out)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    report: dict = {}
    for tie in (False, True):
        cfg = model_config("tiny", [f"model.llm.tie_word_embeddings={str(tie).lower()}"])
        torch.manual_seed(7)
        whole = build_model(cfg)  # the 1-process path: meta build + materialize, global seed 7
        reference = whole_tensors(whole)
        model = sharded_build(cfg, mesh, seed=7)
        bad, n = local_mismatches(model, reference)
        report[f"init_tie{tie}"] = {"mismatches": bad, "sharded": n, "tensors": len(reference),
                                    "tied": model.llm.lm_head.weight is model.llm.get_input_embeddings().weight}
        # the sharded model computes what the whole one does (same batch, gathered loss)
        ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(1))
        report[f"loss_tie{tie}"] = [float(model(input_ids=ids, labels=ids).loss), float(whole(input_ids=ids, labels=ids).loss)]
        if not tie:  # a sharded checkpoint as Lightning's FSDP2 path writes it (DCP, keys under state_dict.model., meta.pt)
            import torch.distributed.checkpoint as dcp
            from omegaconf import OmegaConf

            dcp.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, checkpoint_id=out / "run" / "dcp")
            untied = (cfg, reference)
            if rank == 0:
                torch.save({"global_step": 6, "hyper_parameters": {"model_config": cfg}}, out / "run" / "dcp" / "meta.pt")
                OmegaConf.save({"model": cfg}, out / "run" / "config_resolved.yaml")
                torch.save(whole.state_dict(), out / "run" / "reference.pt")
                # ... and as a 1-process run writes it: a 2-rank next stage re-shards it
                dcp.save({"state_dict": {f"model.{k}": v for k, v in whole.state_dict().items()}},
                         checkpoint_id=out / "run" / "dcp1", no_dist=True)
                torch.save({"global_step": 6}, out / "run" / "dcp1" / "meta.pt")

    # init_from a sharded checkpoint (written by 2 ranks, by 1): each rank reads its slices into its shards
    dist.barrier()
    for name in ("dcp", "dcp1"):
        model = sharded_build(untied[0], mesh, seed=0, sources=[checkpoint_source(out / "run" / name)])
        report[f"load_{name}"] = {"mismatches": local_mismatches(model, untied[1])[0]}

    # loading: rank 0 writes checkpoints of a model with seed 11, every rank then loads them into shards
    cfg = model_config("tiny")
    saved, reference = save_checkpoints(cfg, out)
    for name, path in (("export", out / "export"), ("ckpt", out / "last.ckpt")):
        model = sharded_build(cfg, mesh, seed=0, sources=[checkpoint_source(path)])
        report[f"load_{name}"] = {"mismatches": local_mismatches(model, reference)[0]}
    pretrained = sharded_build({**cfg, "pretrained": str(out / "export")}, mesh, seed=0,
                               sources=weight_sources(build_model({**cfg, "pretrained": str(out / "export")}, device="meta")))
    report["load_model.pretrained"] = {"mismatches": local_mismatches(pretrained, reference)[0]}

    # per-part `pretrained` (as the demo recipes): the parts come from their checkpoints and everything else
    # (adaptor, SAM's extra neck and convs) from the seeded init, the same whether built whole or on meta
    part_cfg = copy.deepcopy(cfg)
    for part, node in (("vision.low.model", part_cfg["vision"]["low"]), ("vision.high.model", part_cfg["vision"]["high"]),
                       ("llm", part_cfg["llm"])):
        node["pretrained"] = str(out / part)
        if rank == 0:
            saved.get_submodule(part).save_pretrained(out / part)
    dist.barrier()
    torch.manual_seed(7)
    whole = build_model(part_cfg)
    sharded = sharded_build(part_cfg, mesh, seed=7, sources=weight_sources(build_model(part_cfg, device="meta")))
    report["load_parts"] = {"mismatches": local_mismatches(sharded, whole_tensors(whole))[0]}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
