"""LLaVA JSON (LLaVA-1.5/NeXT/OneVision, ShareGPT4V): `image` (path or list) + `conversations`
of ``{"from": human|gpt|system, "value"}`` with ``<image>`` tags -> a dsvl conversation."""
from __future__ import annotations

from typing import Any

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.convert.common import Draft, Options, as_list, chat_draft, message, record_id


def draft(record: dict[str, Any], opts: Options) -> Draft:
    if "video" in record:
        raise BadSample(SkipReason.MISSING_FIELD, "video samples are not supported")
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise BadSample(SkipReason.BAD_CONVERSATION, "'conversations' must be a list")
    messages = [message(t.get("from"), t.get("value")) for t in turns]
    return chat_draft(messages, as_list(record.get("image")), record_id(record))
