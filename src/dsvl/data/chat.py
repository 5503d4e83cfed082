"""The "deepseek" chat template of DeepSeek-VL (DeepSeek-VL paper), as supervised text segments.

The template is rendered into segments that carry a `supervised` flag instead of one string, so
label masking is exact (no re-alignment of character offsets after tokenization).
Rendered:  ``{system}\\n\\nUser: {u1}\\n\\nAssistant: {a1}<eos>User: {u2}\\n\\nAssistant:``
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from dsvl.errors import DataError

IMAGE_TOKEN = "<image_placeholder>"
BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜pad▁of▁sentence｜>"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
ROLE_NAMES = {"user": "User", "assistant": "Assistant"}
SEP = "\n\n"


class ConversationError(DataError):
    """A conversation that cannot be rendered (unknown role, empty, no user turn...)."""


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; `eos` appends the end-of-turn token after the text."""

    text: str
    supervised: bool  # True: an assistant answer (SFT loss); False: prompt side
    eos: bool = False


def conversation_segments(conversation: Iterable[Mapping[str, str]], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                          add_generation_prompt: bool = False) -> list[Segment]:
    """Render a conversation with the deepseek template.

    A leading ``{"role": "system"}`` message replaces `system_prompt`; `system_prompt` None or ""
    means no system block. Assistant answers are ``" " + content`` followed by EOS (supervised);
    ``"Assistant:"`` itself belongs to the prompt, so generation continues right after it.
    With `add_generation_prompt` the text ends with ``"Assistant:"`` for the model to continue.
    """
    messages = list(conversation)
    if messages and messages[0].get("role") == "system":
        system_prompt = messages[0].get("content", "")
        messages = messages[1:]
    if not messages:
        raise ConversationError("conversation has no user/assistant messages")
    segments: list[Segment] = []
    prompt = f"{system_prompt}{SEP}" if system_prompt else ""
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content")
        if role not in ROLE_NAMES:
            raise ConversationError(f"unknown role {role!r} (expected one of {sorted(ROLE_NAMES)} or a leading system)")
        if not isinstance(content, str):
            raise ConversationError(f"message content must be a string, got {type(content).__name__}")
        if role == "user":
            prompt += f"{ROLE_NAMES['user']}: {content}{SEP}"
        else:
            prompt += f"{ROLE_NAMES['assistant']}:"
            segments.append(Segment(prompt, supervised=False))
            segments.append(Segment(f" {content}", supervised=True, eos=True))
            prompt = ""
    if add_generation_prompt:
        prompt += f"{ROLE_NAMES['assistant']}:"
    if prompt:
        segments.append(Segment(prompt, supervised=False))
    return segments


def format_conversation(conversation: Iterable[Mapping[str, str]], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                        add_generation_prompt: bool = False, eos_token: str = EOS_TOKEN) -> str:
    """The template as one string (for display, generation prompts and comparison with other code)."""
    segments = conversation_segments(conversation, system_prompt, add_generation_prompt)
    return "".join(s.text + (eos_token if s.eos else "") for s in segments)
