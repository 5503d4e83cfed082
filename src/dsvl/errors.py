"""The one base class of every mistake a user can make (config, data, checkpoint).

The console scripts catch `UserError` once and print it as one line with exit code 2; anything
else is a bug in dsvl and keeps its traceback. Subclass the nearest kind below for new errors.
"""
from __future__ import annotations

import re


class UserError(ValueError):
    """Fix your command, config, data or checkpoint; the message is one line naming what and how."""


class ConfigError(UserError):
    """A config value or combination that cannot run. Checked before any weights exist
    (`dsvl.cli.validate.validate_config`); a run that diverges despite them (non-finite losses
    step after step) ends with one too: the fix is a config change (lr, precision, clipping)."""


class DataError(UserError):
    """Input data that cannot be used at all (missing files, unknown format); single bad samples are
    counted skips, not errors."""


class CheckpointError(UserError):
    """A checkpoint or model directory that cannot be loaded safely or does not fit the model."""


def located(key: str, message: str) -> str:
    """`message` of an error raised inside the config node at `key`, naming where it sits: `key.field=value ...` when
    it starts with the offending setting (or the tail of `key` the part named itself), `key: message` otherwise."""
    setting = re.match(r"^([\w.]+)=", message)
    owner = setting[1].rpartition(".")[0] if setting else ""
    if message.startswith(key):
        return message
    if owner and key.endswith(owner):
        return key.removesuffix(owner) + message
    return f"{key}.{message}" if setting else f"{key}: {message}"
