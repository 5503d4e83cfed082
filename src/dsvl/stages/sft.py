"""Stage 3, supervised fine-tuning: adaptor + LLM + SigLIP train, SAM stays frozen (DeepSeek-VL paper)."""
from __future__ import annotations

from dsvl.stages.base import VLMStage


class SFTStage(VLMStage):
    """Loss on assistant answers only (the chat template masks system and user turns); SAM-B is frozen for GPU
    memory (`stage.trainable=[adaptor,llm,vision]` unfreezes it)."""

    stage_name = "sft"
    default_trainable = ("adaptor", "llm", "vision.low")
    supervise = "assistant"
    default_lr = 2.0e-5
