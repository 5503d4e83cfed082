#!/usr/bin/env python
"""Conversion throughput: `dsvl-data convert --format llava` records/s on 384-px JPEGs, per worker.

    python tools/bench_convert.py [--records 400] [--workers 1 2]

Each record is a LLaVA conversation with one 384x384 photo-like JPEG (the size of the 1.3B's
SigLIP input; kept as-is by the converter after a full decode). The same input is converted
with each worker count; the shards must be byte-identical (the output does not depend on it).
`tools/bench.py` runs it as its `convert` section.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image


def _inputs(root: Path, records: int, side: int, distinct: int = 50) -> Path:
    """`records` LLaVA records over `distinct` JPEGs (smooth gradients plus noise, ~photo-sized files)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:side, 0:side]
    for i in range(distinct):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 2 + i * 7) % 256, ((xx + yy) // 2) % 256], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.jpg", quality=90)
    data = [{"id": str(k), "image": f"{k % distinct}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nDescribe the picture in detail."},
        {"from": "gpt", "value": "A colourful gradient with fine noise, " * 4}]} for k in range(records)]
    (root / "llava.json").write_text(json.dumps(data))
    return root


def bench_convert(records: int = 400, workers: Sequence[int] = (1, 2), side: int = 384) -> dict[str, Any]:
    """records/s of a llava conversion per worker count, and whether the outputs are identical."""
    from dsvl.data.convert import convert

    out: dict[str, Any] = {"records": records, "image_side": side, "workers": {}}
    digests = []
    with tempfile.TemporaryDirectory(prefix="dsvl-bench-convert-") as tmp:
        root = _inputs(Path(tmp), records, side)
        for w in workers:
            report = convert("llava", [str(root / "llava.json")], root / f"out{w}", images=root / "images",
                             workers=w, shard_size=200, progress=False)
            assert sum(report.good.values()) == records, report.summary()
            rate = records / report.seconds
            out["workers"][str(w)] = {"records_per_s": round(rate, 1), "records_per_s_per_worker": round(rate / w, 1),
                                      "seconds": round(report.seconds, 2)}
            digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / f"out{w}").rglob("*.tar"))])
    out["identical_output"] = all(d == digests[0] for d in digests)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    result = bench_convert(args.records, args.workers)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
