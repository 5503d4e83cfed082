"""`dsvl-data`: make the demo data, build shards from JSONL + images, validate shards."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence


def _demo(a: argparse.Namespace) -> int:
    from dsvl.data.demo import make_demo_data

    m = make_demo_data(a.out, seed=a.seed, train_size=a.train_size, eval_size=a.eval_size, shard_size=a.shard_size)
    print(f"demo data in {a.out} ({m['seconds']} s): " + json.dumps(m["samples"]))
    return 0


def _build(a: argparse.Namespace) -> int:
    from dsvl.data.build import build_shards

    r = build_shards(a.jsonl, a.images, a.out, shard_size=a.shard_size, prefix=a.prefix, progress=not a.quiet)
    print(r.summary())
    return 0 if r.good else 1


def _validate(a: argparse.Namespace) -> int:
    from dsvl.data.build import validate_shards

    encoder = None
    if a.tokenizer:
        from dsvl.data.encode import SampleEncoder
        from dsvl.data.datamodule import load_tokenizer
        from dsvl.data.tokenize import TextEncoder

        encoder = SampleEncoder(TextEncoder(load_tokenizer(a.tokenizer), a.num_image_tokens), None, a.max_length)
    r = validate_shards(a.shards, progress=not a.quiet, encoder=encoder)
    print(json.dumps(r.as_dict() | {"shards": len(r.shards)}, indent=2) if a.json else r.summary())
    return 0 if r.skipped.total == 0 else 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsvl-data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="make the synthetic demo shards and tokenizer")
    d.add_argument("--out", default="data/demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--train-size", type=int, default=2000, help="samples per set in the train split")
    d.add_argument("--eval-size", type=int, default=200, help="samples per set in val and test")
    d.add_argument("--shard-size", type=int, default=500)
    d.set_defaults(fn=_demo)
    b = sub.add_parser("build", help="JSONL + image folder -> webdataset shards")
    b.add_argument("jsonl")
    b.add_argument("--images", default=".", help="folder the JSONL image paths are relative to")
    b.add_argument("--out", required=True)
    b.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    b.add_argument("--prefix", default="shard")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=_build)
    v = sub.add_parser("validate", help="count bad samples per reason (exit 2 if any)")
    v.add_argument("shards", nargs="+", help="shard files, folders, globs or brace patterns")
    v.add_argument("--tokenizer", help="also check token lengths with this tokenizer")
    v.add_argument("--num-image-tokens", type=int, default=576)
    v.add_argument("--max-length", type=int, default=4096)
    v.add_argument("--json", action="store_true")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(fn=_validate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    a = parser().parse_args(argv)
    try:
        return a.fn(a)
    except (FileNotFoundError, ValueError) as e:
        print(f"dsvl-data {a.cmd}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
