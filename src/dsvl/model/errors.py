"""The one error type a bad model config raises, so callers can catch it apart from bugs."""
from __future__ import annotations


class ConfigError(ValueError):
    """A model config whose parts do not fit; the message is one line naming the key and what is accepted."""
