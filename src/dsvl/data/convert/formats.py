"""One `draft(record, opts) -> Draft` per input format (docs/data_format.md, "Converting")."""
from __future__ import annotations

from typing import Any, Iterator

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.data.convert.common import Draft, Options, as_list, chat_draft, message, record_id


def _turns(record: dict[str, Any], *names: str) -> list[Any]:
    turns = record[names[0]] if names[0] in record or len(names) == 1 else record[names[1]]
    if not isinstance(turns, list):
        raise BadSample(SkipReason.BAD_CONVERSATION, f"{'/'.join(repr(n) for n in names)} must be a list")
    return turns


def llava(record: dict[str, Any], opts: Options) -> Draft:
    """LLaVA JSON: `image` (path or list) + `conversations` [{from, value}] with ``<image>`` tags."""
    if "video" in record:
        raise BadSample(SkipReason.MISSING_FIELD, "video samples are not supported")
    messages = [message(t.get("from"), t.get("value")) for t in _turns(record, "conversations")]
    return chat_draft(messages, as_list(record.get("image")), record_id(record))


def sharegpt(record: dict[str, Any], opts: Options) -> Draft:
    """LLaMA-Factory sharegpt: `messages` or `conversations`, `images`, optional `system` (put first)."""
    turns = _turns(record, "messages", "conversations")
    messages = [message(t.get("role", t.get("from")), t.get("content", t.get("value"))) for t in turns]
    if record.get("system"):
        messages.insert(0, message("system", record["system"]))
    return chat_draft(messages, as_list(record.get("images")), record_id(record))


def _image_ref(part: dict[str, Any], column: Iterator[Any]) -> Any:
    if part.get("type") == "image_url":
        url = part.get("image_url")
        return url.get("url") if isinstance(url, dict) else url
    for k in ("image", "url", "path", "base64"):
        if part.get(k) is not None:
            return f"data:,{part[k]}" if k == "base64" else part[k]
    ref = next(column, None)  # bare {"type": "image"}: the next image of the `images` column
    if ref is None:
        raise BadSample(SkipReason.PLACEHOLDER_MISMATCH, "more image parts than images")
    return ref


def messages(record: dict[str, Any], opts: Options) -> Draft:
    """Chat `messages` whose content is a string or a list of text / image / image_url parts."""
    turns = _turns(record, "messages")
    column = as_list(record.get("images", record.get("image")))
    pending = iter(column)
    out, refs = [], []
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
        out.append(message(t.get("role"), content))
    # parts name their images; plain-string contents use tags (or none) for the `images` column
    return chat_draft(out, refs if refs else column, record_id(record))


def mmc4(record: dict[str, Any], opts: Options) -> Draft:
    """MMC4 `text_list` + `image_info[]`: each image before its matched sentence; missing images dropped."""
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


def text(record: dict[str, Any], opts: Options) -> Draft:
    """Plain text corpora (the Pile, FineWeb): `text` -> a text document."""
    if not isinstance(record["text"], str):
        raise BadSample(SkipReason.BAD_JSON, f"'text' is a {type(record['text']).__name__}, not a string")
    return Draft(text=record["text"], meta=record_id(record))
