"""What every input format maps to: a `Draft` (dsvl text or conversation + image references),
with role names and image tags normalised to dsvl's schema."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import IMAGE_TOKEN

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
         "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system", "developer": "system"}
# LLaVA's <image> (with the newline LLaVA puts after it), dsvl's own placeholder, MMMU-style <image N>
IMAGE_TAG = re.compile(r"\n?(?:<image>|<image_placeholder>|<image[ _]?(\d+)>)\n?")


@dataclass
class Options:
    """Conversion settings shared by all formats (the `dsvl-data convert` flags)."""

    images: Path | None = None  # root of relative image paths
    category: str = "default"
    modality: str = "auto"  # auto | text | multimodal: keep only that modality
    columns: dict[str, str] = field(default_factory=dict)  # dsvl field name -> input field name
    max_image_side: int = 2048
    layout: str = ""  # hf: the layout recognised from the dataset's columns


@dataclass
class Draft:
    """One converted record before its images are read: ``text`` or ``conversation`` with one
    placeholder per entry of ``images`` (references, in placeholder order)."""

    text: str | None = None
    conversation: list[dict[str, str]] | None = None
    images: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    dropped_images: int = 0  # references dropped on purpose (mmc4: image never downloaded)


def remap(record: Any, columns: Mapping[str, str]) -> dict[str, Any]:
    """The record as a dict with user-named columns renamed to the names the format expects."""
    if not isinstance(record, dict):
        raise BadSample(SkipReason.BAD_JSON, f"record is a {type(record).__name__}, not an object")
    if not columns:
        return record
    out = {k: v for k, v in record.items() if k not in columns.values()}
    out.update({name: record[col] for name, col in columns.items() if col in record})
    return out


def record_id(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's own id, kept in the shard json (dsvl keys are the record's position)."""
    rid = record.get("id")
    return {"id": rid} if isinstance(rid, (str, int)) and not isinstance(rid, bool) else {}


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def message(role: Any, content: Any) -> dict[str, str]:
    if not isinstance(role, str) or role.lower() not in ROLES:
        raise BadSample(SkipReason.BAD_CONVERSATION, f"unknown role {str(role)[:40]!r}")
    if not isinstance(content, str):
        raise BadSample(SkipReason.BAD_CONVERSATION, f"message content is a {type(content).__name__}, not a string")
    return {"role": ROLES[role.lower()], "content": content}


def place_images(texts: Sequence[str], images: Sequence[Any], prepend_to: int = 0) -> tuple[list[str], list[Any]]:
    """Image tags -> dsvl placeholders; the images in placeholder order.

    Plain tags take the images in order and must match their number; ``<image N>`` takes image N
    (1-based). Texts without any tag get all images prepended to ``texts[prepend_to]`` (LLaVA and
    the_cauldron put images before the first question)."""
    order: list[int] = []
    nxt = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal nxt
        if m.group(1) is not None:
            order.append(int(m.group(1)) - 1)
        else:
            order.append(nxt)
            nxt += 1
        return IMAGE_TOKEN

    out = [IMAGE_TAG.sub(sub, t) for t in texts]
    if not order:
        if images:
            out[prepend_to] = IMAGE_TOKEN * len(images) + out[prepend_to]
        return out, list(images)
    if nxt and nxt != len(images) or any(not 0 <= i < len(images) for i in order):
        raise BadSample(SkipReason.PLACEHOLDER_MISMATCH, f"{len(order)} image tags, {len(images)} images")
    return out, [images[i] for i in order]


def chat_draft(messages: Sequence[dict[str, str]], images: Sequence[Any], meta: dict[str, Any]) -> Draft:
    """A conversation of normalised messages with its images placed at their tags (or before
    the first user turn)."""
    if not messages:
        raise BadSample(SkipReason.BAD_CONVERSATION, "no messages")
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), 0)
    texts, ordered = place_images([m["content"] for m in messages], images, first_user)
    return Draft(conversation=[{"role": m["role"], "content": t} for m, t in zip(messages, texts)],
                 images=ordered, meta=meta)
