"""Session fixtures: the tiny presets composed once."""
from __future__ import annotations

import pytest

from dsvl.cli.presets import model_config


@pytest.fixture(scope="session")
def tiny_cfg() -> dict:
    return model_config("tiny")


@pytest.fixture(scope="session")
def tiny_siglip_cfg() -> dict:
    return model_config("tiny_siglip")
