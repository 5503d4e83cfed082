"""dsvl.callbacks: Lightning callbacks (and the CSV logger) for checkpoints, preemption, modality
accounting, non-finite steps, skipped samples, progress and W&B samples."""
from dsvl.callbacks.checkpoint import RunCheckpoint
from dsvl.callbacks.csv_history import ResumableCSVLogger
from dsvl.callbacks.modality import ModalityAccounting
from dsvl.callbacks.nan_guard import NonFiniteGuard, NonFiniteLossError
from dsvl.callbacks.preemption import PreemptionCheckpoint, was_preempted
from dsvl.callbacks.progress import StepProgressBar
from dsvl.callbacks.samples import SampleLogger
from dsvl.callbacks.skip_report import SkipReport

__all__ = ["RunCheckpoint", "ResumableCSVLogger", "ModalityAccounting", "StepProgressBar", "SampleLogger",
           "NonFiniteGuard", "NonFiniteLossError", "PreemptionCheckpoint", "was_preempted", "SkipReport"]
