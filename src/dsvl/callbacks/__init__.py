"""dsvl.callbacks: Lightning callbacks for throughput, modality accounting, progress and W&B samples."""
from dsvl.callbacks.modality import ModalityAccounting
from dsvl.callbacks.nan_guard import NonFiniteGuard, NonFiniteLossError
from dsvl.callbacks.preemption import PreemptionCheckpoint, was_preempted
from dsvl.callbacks.progress import StepProgressBar
from dsvl.callbacks.samples import SampleLogger
from dsvl.callbacks.skip_report import SkipReport
from dsvl.callbacks.throughput import ThroughputMonitor

__all__ = ["ThroughputMonitor", "ModalityAccounting", "StepProgressBar", "SampleLogger", "NonFiniteGuard",
           "NonFiniteLossError", "PreemptionCheckpoint", "was_preempted", "SkipReport"]
