"""Compatibility name only: `dsvl.cli._config.user_error_types` imports `ResumeError` from here until it
catches `dsvl.errors.UserError`; delete then. Resuming is `dsvl.cli.train.resume_from` + Lightning's fit."""
from dsvl.errors import CheckpointError as ResumeError

__all__ = ["ResumeError"]
