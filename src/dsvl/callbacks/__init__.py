"""dsvl.callbacks: Lightning callbacks for throughput, modality accounting, progress and W&B samples."""
from dsvl.callbacks.modality import ModalityAccounting
from dsvl.callbacks.progress import StepProgressBar
from dsvl.callbacks.samples import SampleLogger
from dsvl.callbacks.throughput import ThroughputMonitor

__all__ = ["ThroughputMonitor", "ModalityAccounting", "StepProgressBar", "SampleLogger"]
