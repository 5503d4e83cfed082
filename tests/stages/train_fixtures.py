"""Fixtures shared by tests/stages, tests/cli and tests/recipes: small demo data, fast overrides."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")

# Every training test runs a few steps of the tiny model with small micro-batches on the demo data.
FAST = [
    "trainer.max_steps=2",
    "++trainer.enable_progress_bar=false",
    "scheduler.warmup_steps=1",
    "data.micro_batch_size=4",
    "data.val_batch_size=4",
    "data.val_max_batches=1",
    "data.shuffle_buffer=8",
    "stage.global_batch=8",
    "logger=csv",
    "callbacks.samples=null",
]


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small copy of the bundled demo data (all sets, tokenizer), made once per session."""
    from dsvl.data.demo import make_demo_data

    out = tmp_path_factory.mktemp("demo_data")
    make_demo_data(out, train_size=96, eval_size=24, shard_size=48)
    return out


@pytest.fixture
def compose_train(demo_data: Path, tmp_path: Path):
    """compose(overrides) -> the dsvl-train config on the small demo data, run dir in tmp_path."""
    from dsvl.cli._config import compose

    def make(*overrides: str, fast: bool = True, out: Path | None = None):
        return compose([f"paths.data_dir={demo_data}", *(FAST if fast else []), *overrides], output_dir=out or tmp_path / "run")

    return make


class ModalityRecorder:
    """A Lightning callback (named by `+callbacks.record._target_=train_fixtures.ModalityRecorder`) that appends
    `global_step modality` per micro-batch to `path`."""

    def __new__(cls, path: str):  # noqa: D102 - built lazily so importing this module needs no Lightning
        from lightning.pytorch.callbacks import Callback

        class _Recorder(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                with open(path, "a") as f:
                    f.write(f"{trainer.global_step} {batch['modality']}\n")

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.updates = pl_module.train_loss["all"].update_count  # steps that fed the train/loss metric object

            def on_train_end(self, trainer, pl_module):  # Lightning resets the metric objects it logged at epoch end
                with open(path, "a") as f:
                    f.write(f"train_loss_updates {self.updates} {pl_module.train_loss['all'].update_count}\n")

        return _Recorder()


class FailAt:
    """A callback raising RuntimeError at the start of global step `step` (an interrupted stage)."""

    def __new__(cls, step: int):  # noqa: D102
        from lightning.pytorch.callbacks import Callback

        class _Fail(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == step:
                    raise RuntimeError(f"interrupted at step {step}")

        return _Fail()


def caption_stage_class():
    """A new stage, as a user adds one: a VLMStage subclass naming what differs (see test_new_stage.py)."""
    from dsvl.stages import VLMStage

    class CaptionStage(VLMStage):
        """Adaptor + LLM train on captions; towers frozen."""

        stage_name = "caption"
        default_trainable = ("adaptor", "llm")
        supervise = "all"
        default_lr = 1.0e-3

    return CaptionStage


CaptionStage = caption_stage_class()
