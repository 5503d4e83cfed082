"""`dsvl-data stats`: what a user needs to choose `max_length` and mixture weights (docs/data_format.md)."""
from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dsvl.data.bad_samples import BadSample, SkipCounter, SkipReason
from dsvl.data.build import shard_urls
from dsvl.data.encode import SampleEncoder
from dsvl.data.schema import caption_to_raw, parse_sample
from dsvl.data.streams import read_tar

log = logging.getLogger(__name__)
PERCENTILES = (50, 90, 99, 100)


def packing_fill(lengths: list[int], max_length: int) -> float:
    """Real-token share of rows packed greedily in stream order, as `dsvl.data.packing.pack_rows`
    packs them (a sample that does not fit starts the next row; samples longer than max_length
    are skipped by training, so left out)."""
    fit = [n for n in lengths if n <= max_length]
    rows, used = 0, max_length
    for n in fit:
        if used + n > max_length:
            rows, used = rows + 1, 0
        used += n
    return sum(fit) / (rows * max_length) if rows else 0.0


def shard_stats(urls: str | list[str], encoder: SampleEncoder | None = None, max_length: int = 4096,
                fmt: str = "dsvl", out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Statistics of the shards at `urls` (token lengths only with an `encoder`); with `out`, also
    ``stats.json`` and ``token_lengths.png`` there."""
    from tqdm import tqdm

    shards = shard_urls(urls)
    skipped = SkipCounter()
    per_modality: Counter[str] = Counter()
    per_category: Counter[str] = Counter()
    images: dict[str, Counter[int]] = defaultdict(Counter)
    lengths: dict[str, list[int]] = defaultdict(list)
    too_long: Counter[str] = Counter()  # rejected by the encoder's character bound: surely over max_length

    to_dsvl = caption_to_raw if fmt == "caption" else dict
    raws = tqdm((raw for url in shards for raw in read_tar(url, skipped)), desc="stats", unit="sample", disable=not progress)
    for sample in skipped.parsed(raws, lambda raw: parse_sample(to_dsvl(raw), decode_images=False)):
        if encoder is not None:
            try:
                lengths[sample.modality].append(len(encoder.tokenize(sample)))
            except BadSample as e:
                if e.reason != SkipReason.TOO_LONG:
                    skipped.add(e.reason, sample.key, e.detail)
                    continue
                too_long[sample.modality] += 1
        per_modality[sample.modality] += 1
        per_category[f"{sample.modality}/{sample.category}"] += 1
        images[sample.modality][sample.num_placeholders] += 1
    result: dict[str, Any] = {
        "shards": len(shards), "samples": dict(per_modality), "categories": dict(sorted(per_category.items())),
        "images_per_sample": {m: dict(sorted(c.items())) for m, c in images.items()}, "skipped": skipped.as_dict()}
    if encoder is not None:
        result["max_length"] = max_length
        result["tokens"] = {}
        for m in sorted(set(lengths) | set(too_long)):
            s = sorted(lengths[m])
            over = (sum(n > max_length for n in s) + too_long[m]) / (len(s) + too_long[m])
            result["tokens"][m] = {"mean": round(sum(s) / max(len(s), 1), 1),
                                   **{f"p{q}": int(np.percentile(s, q, method="nearest")) for q in PERCENTILES if s},
                                   "over_max_length": round(over, 4)}
        if lengths.get("text"):
            result["tokens"]["text"]["packing_fill"] = round(packing_fill(lengths["text"], max_length), 4)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stats.json").write_text(json.dumps(result, indent=2) + "\n")
        if lengths:
            _histogram(lengths, max_length, out / "token_lengths.png")
    return result


def _histogram(lengths: dict[str, list[int]], max_length: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for m, ls in sorted(lengths.items()):
        ax.hist(ls, bins=50, alpha=0.6, label=f"{m} ({len(ls)})")
    ax.axvline(max_length, color="k", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel("tokens per sample (image placeholders expanded)")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
