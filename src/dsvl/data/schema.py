"""The shard sample schema (docs/data_format.md): `parse_sample` turns webdataset's dict of bytes
into a typed `Sample` or raises `BadSample` with the reason, so callers count and skip instead of crashing.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from PIL import Image

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.data.images import load_rgb

MODALITIES = ("text", "multimodal")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_IMAGE_FIELD = re.compile(r"^(\d+)\.(" + "|".join(IMAGE_EXTENSIONS) + r")$")
_ROLES = ("system", "user", "assistant")


@dataclass
class Sample:
    """One validated sample; `images` are decoded RGB PIL images in placeholder order."""

    key: str
    modality: str
    category: str
    text: str | None = None
    conversation: list[dict[str, str]] | None = None
    images: list[Image.Image] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # the whole json (options, answer, ...)
    url: str = ""

    @property
    def num_placeholders(self) -> int:
        if self.text is not None:
            return self.text.count(IMAGE_TOKEN)
        return sum(m["content"].count(IMAGE_TOKEN) for m in self.conversation or [])


def image_fields(raw: Mapping[str, Any]) -> dict[int, str]:
    """Index -> field name of the image fields of a raw sample."""
    return {int(m.group(1)): name for name in raw if isinstance(name, str) and (m := _IMAGE_FIELD.match(name.lower()))}


def decode_image(data: bytes, key: str = "", name: str = "", max_side: int | None = None) -> Image.Image:
    """Decode fully (so truncated files fail here, not later in a worker), EXIF-oriented RGB
    (`dsvl.data.images.load_rgb`); JPEGs above `max_side` are decoded at a reduced scale."""
    try:
        return load_rgb(data, max_side)
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, DecompressionBombError...)
        raise BadSample(SkipReason.BAD_IMAGE, f"{name}: {type(e).__name__}: {str(e)[:200]}", key) from None


def loads(data: Any) -> Any:
    """`json.loads` of untrusted bytes: every way they can fail is a `ValueError` (nesting too
    deep for the parser included), so callers count one reason."""
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(str(e).splitlines()[0][:200]) from None
    except RecursionError:
        raise ValueError("json nested too deep") from None


def parse_json(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    if "json" not in raw:
        raise BadSample(SkipReason.MISSING_FIELD, "no json field", key)
    data = raw["json"]
    try:
        meta = data if isinstance(data, dict) else loads(data)
    except ValueError as e:
        raise BadSample(SkipReason.BAD_JSON, str(e), key) from None
    if not isinstance(meta, dict):
        raise BadSample(SkipReason.BAD_JSON, f"json is a {type(meta).__name__}, not an object", key)
    return meta


def check_conversation(conv: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(conv, list) or not conv:
        raise BadSample(SkipReason.BAD_CONVERSATION, "conversation must be a non-empty list", key)
    for i, m in enumerate(conv):
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise BadSample(SkipReason.BAD_CONVERSATION, f"message {i} needs role in {_ROLES} and string content", key)
        if m["role"] == "system" and i:
            raise BadSample(SkipReason.BAD_CONVERSATION, "system message only allowed first", key)
    return [{"role": m["role"], "content": m["content"]} for m in conv]


def parse_sample(raw: Mapping[str, Any], decode_images: bool = True, max_side: int | None = None) -> Sample:
    """Validate a raw webdataset sample; raise `BadSample` on the first problem."""
    key = str(raw.get("__key__", ""))
    meta = parse_json(raw, key)
    modality = meta.get("modality")
    if modality not in MODALITIES:
        raise BadSample(SkipReason.UNKNOWN_MODALITY, f"modality {modality!r}", key)
    text, conv = meta.get("text"), meta.get("conversation")
    if text is None and conv is None:
        raise BadSample(SkipReason.MISSING_FIELD, "neither 'text' nor 'conversation'", key)
    if text is not None and not isinstance(text, str):
        raise BadSample(SkipReason.BAD_JSON, "'text' must be a string", key)
    category = meta.get("category", "default")
    if not isinstance(category, str):  # it becomes a metric name: never pass a list or dict on
        raise BadSample(SkipReason.BAD_JSON, "'category' must be a string", key)
    sample = Sample(key=key, modality=modality, category=category, meta=meta, url=str(raw.get("__url__", "")))
    if text is not None:
        sample.text = text
        plain = text.replace(IMAGE_TOKEN, "")
    else:
        sample.conversation = check_conversation(conv, key)
        plain = "".join(m["content"] for m in sample.conversation).replace(IMAGE_TOKEN, "")
    if not plain.strip():
        raise BadSample(SkipReason.EMPTY_TEXT, "no text besides placeholders", key)
    fields = image_fields(raw)
    n = sample.num_placeholders
    if n != len(fields):
        raise BadSample(SkipReason.PLACEHOLDER_MISMATCH, f"{n} placeholders, {len(fields)} images", key)
    if modality == "text" and n:
        raise BadSample(SkipReason.UNKNOWN_MODALITY, f"modality 'text' with {n} images", key)
    if modality == "multimodal" and not n:
        raise BadSample(SkipReason.MISSING_FIELD, "modality 'multimodal' without images", key)
    if sorted(fields) != list(range(n)):
        raise BadSample(SkipReason.MISSING_FIELD, f"image fields {sorted(fields.values())} are not 0..{n - 1}", key)
    if decode_images:
        sample.images = [decode_image(raw[fields[i]], key, fields[i], max_side) for i in range(n)]
    return sample


def caption_to_raw(raw: Mapping[str, Any], category: str = "image_caption") -> dict[str, Any]:
    """An img2dataset sample (``KEY.jpg|png|webp`` + ``KEY.txt``, optional ``KEY.json`` metadata) as
    a dsvl raw sample: the caption document ``<image_placeholder>{caption}`` with its one image."""
    key = str(raw.get("__key__", ""))
    image = next((f for f in IMAGE_EXTENSIONS if f in raw), None)
    if image is None:
        raise BadSample(SkipReason.MISSING_FIELD, f"no image field ({'|'.join(IMAGE_EXTENSIONS)})", key)
    caption: Any = raw.get("txt")
    if caption is None and "json" in raw:  # img2dataset keeps the caption column in the metadata too
        try:
            meta = loads(raw["json"])
        except ValueError as e:
            raise BadSample(SkipReason.BAD_JSON, str(e), key) from None
        caption = meta.get("caption") if isinstance(meta, dict) else None
    if isinstance(caption, (bytes, bytearray)):
        caption = caption.decode("utf-8", errors="replace")
    if not isinstance(caption, str):
        raise BadSample(SkipReason.MISSING_FIELD, "no caption (txt field or json 'caption' string)", key)
    doc = {"modality": "multimodal", "category": category, "text": IMAGE_TOKEN + caption.strip()}
    return {"__key__": key, "__url__": raw.get("__url__", ""), "json": doc, f"0.{image}": raw[image]}
