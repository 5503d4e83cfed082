"""Stage 2, joint vision-language pretraining: adaptor + LLM train, towers frozen (DeepSeek-VL paper)."""
from __future__ import annotations

from dsvl.stages.base import VLMStage


class PretrainStage(VLMStage):
    """Modality-grouped global steps under the scheduled language ratio; text is packed."""

    stage_name = "pretrain"
    default_trainable = ("adaptor", "llm")
    supervise = "all"
    default_lr = 3.0e-5
