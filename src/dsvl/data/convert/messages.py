"""Chat messages (OpenAI / transformers / TRL): `messages` whose `content` is a string or a list of
parts ``{"type": "text", "text"}`` / ``{"type": "image", "image"|"url"|"path"|"base64"}`` /
``{"type": "image_url", "image_url": {"url"}}`` -> a dsvl conversation with a placeholder per
image part (a bare image part takes the next entry of the record's `images`)."""
from __future__ import annotations

from typing import Any, Iterator

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.data.convert.common import Draft, Options, as_list, chat_draft, message, record_id

_REF_KEYS = ("image", "url", "path", "base64")


def _image_ref(part: dict[str, Any], column: Iterator[Any]) -> Any:
    if part.get("type") == "image_url":
        url = part.get("image_url")
        return url.get("url") if isinstance(url, dict) else url
    for k in _REF_KEYS:
        if part.get(k) is not None:
            ref = part[k]
            return f"data:,{ref}" if k == "base64" else ref
    ref = next(column, None)  # bare {"type": "image"}: the next image of the `images` column
    if ref is None:
        raise BadSample(SkipReason.PLACEHOLDER_MISMATCH, "more image parts than images")
    return ref


def draft(record: dict[str, Any], opts: Options) -> Draft:
    turns = record["messages"]
    if not isinstance(turns, list):
        raise BadSample(SkipReason.BAD_CONVERSATION, "'messages' must be a list")
    column = as_list(record.get("images", record.get("image")))
    pending = iter(column)
    messages, refs = [], []
    for t in turns:
        content = t.get("content")
        if isinstance(content, list):
            text = []
            for part in content:
                if part.get("type") == "text":
                    text.append(part["text"])
                elif part.get("type") in ("image", "image_url"):
                    text.append(IMAGE_TOKEN)
                    refs.append(_image_ref(part, pending))
                else:
                    raise BadSample(SkipReason.BAD_CONVERSATION, f"unsupported content part {str(part.get('type'))[:40]!r}")
            content = "".join(text)
        messages.append(message(t.get("role"), content))
    # parts name their images; plain-string contents use tags (or none) for the `images` column
    return chat_draft(messages, refs if refs else column, record_id(record))
