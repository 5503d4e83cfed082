#!/usr/bin/env python
"""Consolidate a sharded (torch.distributed.checkpoint) dsvl checkpoint into one `save_pretrained` export.

    python tools/consolidate_checkpoint.py outputs/<run>/checkpoints/last.ckpt outputs/<run>/export
    python tools/consolidate_checkpoint.py CKPT_DIR OUT_DIR --config outputs/<run>/config_resolved.yaml

`trainer=fsdp` saves checkpoints as DCP directories (Lightning's ModelParallelStrategy with
`save_distributed_checkpoint=true`): one file per rank plus `.metadata` and `meta.pt`. This reads the
model weights (`state_dict`, keys under `model.`; not the optimizer state) in one process with no process
group, whatever world size wrote them, with the reader `init_from` uses (`read_sharded_checkpoint`: DCP,
its index unpickled the safe way), puts them into the model the run's `config_resolved.yaml` describes,
and writes a transformers DeepSeek-VL directory (safetensors). It needs host memory for the whole model
twice for a moment (about 8 bytes per parameter in fp32). Exit 2 with one line on a bad path or config.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("consolidate_checkpoint")


def find_config(checkpoint: Path) -> Path:
    """The run's `config_resolved.yaml`: next to the checkpoint or in a parent directory."""
    for parent in checkpoint.resolve().parents:
        if (parent / "config_resolved.yaml").exists():
            return parent / "config_resolved.yaml"
    raise FileNotFoundError(f"no config_resolved.yaml above {checkpoint}; pass --config")


def consolidate(checkpoint: Path, out: Path, config: Path | None = None) -> Path:
    """Write the model of a sharded checkpoint to `out` as a `save_pretrained` directory; returns `out`."""
    from omegaconf import OmegaConf

    from dsvl.cli.models import build_model
    from dsvl.stages.checkpoint import read_sharded_checkpoint

    if not (checkpoint / ".metadata").exists():
        raise FileNotFoundError(f"{checkpoint} is not a sharded (torch.distributed.checkpoint) directory: no .metadata")
    cfg = OmegaConf.load(config or find_config(checkpoint))
    state = read_sharded_checkpoint(checkpoint)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    # built for real for its buffers (rotary tables, position ids: not in checkpoints); `assign` then
    # replaces the random weights by the loaded ones instead of copying into them
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True))
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    params = {n for n, _ in model.named_parameters()}
    if [k for k in missing if k in params] or unexpected:
        raise ValueError(f"{checkpoint} does not hold this config's model: missing {sorted(set(missing) & params)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    if model.llm.config.tie_word_embeddings:
        model.llm.tie_weights()  # assign gave the tied pair two tensors
    model.save_pretrained(out)
    log.info("consolidated %s (%d tensors) into %s", checkpoint, len(weights), out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="a sharded checkpoint directory (e.g. checkpoints/last.ckpt)")
    ap.add_argument("out", type=Path, help="where to write the save_pretrained export")
    ap.add_argument("--config", type=Path, default=None, help="the run's config_resolved.yaml (default: found above)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        consolidate(args.checkpoint, args.out, args.config)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
