"""Tiny real models and a demo tokenizer for the eval tests (built once per session, nothing downloads)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dsvl.data.demo import generate_samples, sample_texts, train_tokenizer
from .eval_helpers import model_config


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data engineer's demo BPE tokenizer, trained on a few hundred demo samples."""
    texts = [sample_texts(s) for name in ("sft/multimodal", "sft/text", "pretrain/text")
             for s in generate_samples(name, "train", 150, seed=0)]
    texts += [sample_texts(s) for s in generate_samples("mc", "val", 50, seed=0)]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tokenizer"), vocab_size=384)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_config(tokenizer: Any) -> dict[str, Any]:
    return model_config("tiny", tokenizer)


@pytest.fixture(scope="session")
def tiny_model(tiny_config: dict[str, Any]) -> torch.nn.Module:
    """Tiny hybrid (SigLIP + SAM) model with random weights, eval mode."""
    from dsvl.cli.models import build_model

    torch.manual_seed(0)
    return build_model(tiny_config).eval()
