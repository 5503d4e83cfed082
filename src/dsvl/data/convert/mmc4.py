"""MMC4 interleaved documents: `text_list` sentences + `image_info[]` (`image_name` under the image
root, `matched_text_index`) -> one dsvl text document, each image placed before its matched
sentence, sentences joined by spaces. Images that were never downloaded are dropped (counted)."""
from __future__ import annotations

from typing import Any

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.data.convert.common import Draft, Options, record_id


def draft(record: dict[str, Any], opts: Options) -> Draft:
    sentences, infos = record["text_list"], record.get("image_info") or []
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise BadSample(SkipReason.BAD_JSON, "'text_list' must be a list of strings")
    before: dict[int, list[str]] = {}
    dropped = 0
    for info in infos:
        index, name = info["matched_text_index"], info["image_name"]
        if not isinstance(index, int) or not 0 <= index < len(sentences) or not isinstance(name, str):
            raise BadSample(SkipReason.BAD_JSON, f"image_info entry {str(info)[:80]} does not match text_list")
        path = (opts.images / name) if opts.images else None
        if path is None or not path.is_file():
            dropped += 1
            continue
        before.setdefault(index, []).append(str(path))
    parts, images = [], []
    for i, sentence in enumerate(sentences):
        images.extend(before.get(i, []))
        parts.append(IMAGE_TOKEN * len(before.get(i, [])) + sentence)
    meta = record_id(record) | ({"url": record["url"]} if isinstance(record.get("url"), str) else {})
    return Draft(text=" ".join(parts), images=images, meta=meta, dropped_images=dropped)
