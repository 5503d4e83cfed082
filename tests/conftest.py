"""Suite-wide settings: nothing downloads, nothing phones home, CPU threads kept small."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_logger_levels():
    """Entry points run in-process (the demo quiets loggers) must not change what later tests, or the
    processes they fork, log."""
    manager = logging.root.manager
    before = {name: (lg.level, lg.propagate) for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root_level = logging.root.level
    yield
    for name, lg in list(manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            lg.setLevel(before.get(name, (logging.NOTSET, True))[0])
            lg.propagate = before.get(name, (0, True))[1]
    logging.root.setLevel(root_level)
