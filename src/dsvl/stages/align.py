"""Stage 1, adaptor warm-up: only the vision-language adaptor trains (DeepSeek-VL paper)."""
from __future__ import annotations

from dsvl.stages.base import VLMStage


class AlignStage(VLMStage):
    """Both vision towers and the LLM frozen; image-text pairs; loss on the caption tokens."""

    stage_name = "align"
    default_trainable = ("adaptor",)
    supervise = "all"
    default_lr = 1.0e-3
