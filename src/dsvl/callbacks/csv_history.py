"""`ResumableCSVLogger`: one `metrics.csv` per run across restarts.

Lightning's CSVLogger deletes an existing `metrics.csv`. This one keeps it: the first rows a
(re)started process writes decide where its history begins, and older rows from that step on
(written by a killed process after its last checkpoint) are dropped, so every step appears once.
A fresh run in a reused dir starts at step 0 and so replaces the file, as Lightning's does.
"""
from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._continue = self._fs.isfile(self.metrics_file_path)

    def save(self) -> None:
        if self._continue and self.metrics:
            self._continue = False
            first = min(int(m["step"]) for m in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                rows = [r for r in reader if r.get("step") and int(float(r["step"])) < first]
                self.metrics_keys = sorted(reader.fieldnames or [])
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
        super().save()


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, continuing `<save_dir>/<name>/<version>/metrics.csv` of a resumed run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
