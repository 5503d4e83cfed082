"""Compatibility name only: `dsvl.stages.strategies.check_strategy` and `dsvl.cli._config.user_error_types`
import `TrainConfigError` from here until their owners switch to `dsvl.errors.ConfigError`; delete then."""
from dsvl.errors import ConfigError as TrainConfigError

__all__ = ["TrainConfigError"]
