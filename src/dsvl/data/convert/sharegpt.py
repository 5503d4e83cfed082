"""LLaMA-Factory "sharegpt": `messages` (role/content) or `conversations` (from/value), `images`
list, optional `system` column, ``<image>`` tags -> a dsvl conversation (system first)."""
from __future__ import annotations

from typing import Any

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.convert.common import Draft, Options, as_list, chat_draft, message, record_id


def draft(record: dict[str, Any], opts: Options) -> Draft:
    turns = record["messages"] if "messages" in record else record["conversations"]
    if not isinstance(turns, list):
        raise BadSample(SkipReason.BAD_CONVERSATION, "'messages'/'conversations' must be a list")
    messages = [message(t.get("role", t.get("from")), t.get("content", t.get("value"))) for t in turns]
    system = record.get("system")
    if system:
        messages.insert(0, message("system", system))
    return chat_draft(messages, as_list(record.get("images")), record_id(record))
