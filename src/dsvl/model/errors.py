"""The one error type a bad model config raises, so callers can catch it apart from bugs."""
from __future__ import annotations

from dsvl import errors


class ConfigError(errors.ConfigError):
    """A model config whose parts do not fit; the message is one line naming the key and what is accepted."""
