"""`dsvl-data`: convert public formats to shards, build shards from JSONL + images, validate and
describe shards, make the demo data. A user's mistake (missing input, unknown format, bad flag)
is one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

from dsvl.cli._config import OneLineParser, positive_int
from dsvl.errors import DataError, UserError

PROG = "dsvl-data"


def _demo(a: argparse.Namespace) -> int:
    from dsvl.data.demo import make_demo_data

    m = make_demo_data(a.out, seed=a.seed, train_size=a.train_size, eval_size=a.eval_size, shard_size=a.shard_size)
    print(f"demo data in {a.out} ({m['seconds']} s): " + json.dumps(m["samples"]))
    return 0


def _build(a: argparse.Namespace) -> int:
    from pathlib import Path

    from dsvl.data.build import build_shards

    if not Path(a.jsonl).is_file():
        raise DataError(f"input {a.jsonl!r} not found")
    r = build_shards(a.jsonl, a.images, a.out, shard_size=a.shard_size, prefix=a.prefix, progress=not a.quiet)
    print(r.summary())
    if not r.good:
        raise DataError(f"no good sample in {a.jsonl}: {r.skipped.summary()}")
    return 0


def _columns(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        name, sep, col = p.partition("=")
        if not sep or not name or not col:
            raise DataError(f"--column wants NAME=COLUMN, got {p!r}")
        out[name] = col
    return out


def _convert(a: argparse.Namespace) -> int:
    from dsvl.data.convert import convert

    r = convert(a.format, a.inputs, a.out, images=a.images, category=a.category, modality=a.modality,
                shard_size=a.shard_size, workers=a.workers, columns=_columns(a.column), max_image_side=a.max_image_side,
                split=a.split, subset=a.subset, progress=not a.quiet)
    print(json.dumps(r.as_dict(), indent=2) if a.json else r.summary())
    if not sum(r.good.values()):
        raise DataError(f"no record of {a.inputs[0]} converted as --format {a.format}: {r.skipped.summary()}")
    return 0


def _encoder(a: argparse.Namespace) -> Any:
    from dsvl.data.datamodule import load_tokenizer
    from dsvl.data.encode import SampleEncoder
    from dsvl.data.tokenize import TextEncoder

    return SampleEncoder(TextEncoder(load_tokenizer(a.tokenizer), a.num_image_tokens), None, a.max_length)


def _validate(a: argparse.Namespace) -> int:
    from dsvl.data.build import validate_shards

    r = validate_shards(a.shards, progress=not a.quiet, encoder=_encoder(a) if a.tokenizer else None, fmt=a.format)
    print(json.dumps(r.as_dict() | {"shards": len(r.shards)}, indent=2) if a.json else r.summary())
    return 0 if r.skipped.total == 0 else 2


def _stats(a: argparse.Namespace) -> int:
    from dsvl.data.stats import shard_stats

    r = shard_stats(a.shards, _encoder(a) if a.tokenizer else None, a.max_length, a.format, a.out, not a.quiet)
    print(json.dumps(r, indent=2))
    return 0


def _shard_args(p: argparse.ArgumentParser) -> None:
    from dsvl.data.encode import SOURCE_FORMATS

    p.add_argument("shards", nargs="+", help="shard files, folders (every .tar below), globs or brace patterns")
    p.add_argument("--format", choices=SOURCE_FORMATS, default="dsvl", help="caption: img2dataset tars")
    p.add_argument("--tokenizer", help="tokenizer directory: also measure token lengths")
    p.add_argument("--num-image-tokens", type=positive_int, default=576)
    p.add_argument("--max-length", type=positive_int, default=4096)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parser() -> argparse.ArgumentParser:
    from dsvl.data.convert import FORMATS, MODALITIES

    p = OneLineParser(prog=PROG, description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{convert,build,validate,stats,demo}")
    c = sub.add_parser("convert", help="LLaVA / sharegpt / messages / HF datasets / MMC4 / text -> dsvl shards")
    c.add_argument("inputs", nargs="+", help="input files (hf: save_to_disk folder, parquet/arrow files or hub id)")
    c.add_argument("--format", required=True, choices=sorted(FORMATS))
    c.add_argument("--out", required=True, help="writes OUT/multimodal/ and OUT/text/ (only those that occur)")
    c.add_argument("--images", help="folder that relative image paths start from")
    c.add_argument("--category", help="category of every sample (default: the input's name)")
    c.add_argument("--modality", choices=MODALITIES, default="auto", help="keep only this modality (auto: both)")
    c.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    c.add_argument("--workers", type=positive_int, default=1, help="processes (the output does not depend on it)")
    c.add_argument("--column", action="append", default=[], metavar="NAME=COLUMN",
                   help="read field NAME (text, image, images, caption, conversations, messages, texts...) from COLUMN")
    c.add_argument("--max-image-side", type=positive_int, default=2048, help="larger images are downscaled")
    c.add_argument("--split", default="train", help="hf: split")
    c.add_argument("--subset", help="hf hub: dataset config name")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(fn=_convert)
    b = sub.add_parser("build", help="dsvl JSONL + image folder -> webdataset shards")
    b.add_argument("jsonl")
    b.add_argument("--images", default=".", help="folder the JSONL image paths are relative to")
    b.add_argument("--out", required=True)
    b.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    b.add_argument("--prefix", default="shard")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=_build)
    v = sub.add_parser("validate", help="count bad samples per reason (exit 2 if any)")
    _shard_args(v)
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=_validate)
    s = sub.add_parser("stats", help="samples per modality/category, images per sample, token lengths, packing fill")
    _shard_args(s)
    s.add_argument("--out", help="also write stats.json and token_lengths.png here")
    s.set_defaults(fn=_stats)
    d = sub.add_parser("demo", help="make the synthetic demo shards and tokenizer")
    d.add_argument("--out", default="data/demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--train-size", type=positive_int, default=2000, help="samples per set in the train split")
    d.add_argument("--eval-size", type=positive_int, default=200, help="samples per set in val and test")
    d.add_argument("--shard-size", type=positive_int, default=500)
    d.set_defaults(fn=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    a = parser().parse_args(argv)
    try:
        return a.fn(a)
    except (UserError, FileNotFoundError) as e:
        msg = " ".join(str(e).split())  # one line, whatever the message held
        print(f"{PROG} {a.cmd}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
