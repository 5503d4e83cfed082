"""What `dsvl-demo` and `dsvl-demo ablation` both need before training: the demo data (and its
pretrained parts) on disk, and quiet logging."""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

log = logging.getLogger("dsvl.demo")


def ensure_demo_data(data_dir: Path, fresh: bool = False) -> float:
    """Make the demo data and pretrained parts unless they are there; returns the seconds spent."""
    if (data_dir / "manifest.json").is_file() and (data_dir / "parts" / "parts.json").is_file() and not fresh:
        log.info("demo data found in %s", data_dir)
        return 0.0
    from dsvl.data.demo import make_demo_data

    start = time.perf_counter()
    make_demo_data(data_dir)
    return time.perf_counter() - start


def quiet_logging() -> None:
    """Our INFO lines, Lightning's warnings only (the demo prints its own table)."""
    import lightning.pytorch  # noqa: F401 - it sets its own logger levels on import; ours come after

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "dsvl.data", "dsvl.model", "dsvl.stages.checkpoint", "dsvl.cli.train", "dsvl.callbacks",
                 "dsvl.cli.evaluate", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").propagate = False  # it has its own handler: no double lines
    warnings.filterwarnings("ignore", message=".*treespec.*")  # a torch/Lightning deprecation, not ours
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars between our lines
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
