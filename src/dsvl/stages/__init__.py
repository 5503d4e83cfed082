"""dsvl.stages: one LightningModule per training stage over the shared core, and what only they need."""
from dsvl.stages.align import AlignStage
from dsvl.stages.base import VLMStage
from dsvl.stages.freezing import PART_NAMES, FreezeConfigError, apply_freezing, expand_part_names, freeze_table
from dsvl.stages.pretrain import PretrainStage
from dsvl.stages.schedulers import WarmupCosineLR, WarmupMultiStepLR
from dsvl.stages.sft import SFTStage

__all__ = [
    "VLMStage", "AlignStage", "PretrainStage", "SFTStage", "PART_NAMES", "FreezeConfigError",
    "apply_freezing", "expand_part_names", "freeze_table", "WarmupCosineLR", "WarmupMultiStepLR",
]
