"""Training fixtures (tests/stages/train_fixtures.py), shared by tests/stages, tests/cli and tests/recipes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))

from train_fixtures import FAST, compose_train, demo_data  # noqa: E402,F401
