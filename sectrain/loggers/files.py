"""The run folder's metric files: metrics.csv, metrics.jsonl, TensorBoard events, and
summary.json, each written so that an interrupted write leaves the old file whole."""

import csv
import json
import logging
import os
from pathlib import Path

metrics_log = logging.getLogger("sectrain.metrics")  # to the run's log file only


def write_json(path, data):
    """Writes JSON atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


class FileLogger:
    """Appends one row per epoch to metrics.csv, metrics.jsonl and TensorBoard."""

    def __init__(self, run_dir, tensorboard=True):
        self.csv_path = Path(run_dir) / "metrics.csv"
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(str(Path(run_dir) / "tensorboard"))

    def restart_after(self, epoch):
        """Keeps the rows of epochs up to `epoch` (the last checkpoint) and returns them;
        rows written after that checkpoint belong to work that is about to be redone."""
        rows = []
        if self.jsonl_path.exists():
            rows = [json.loads(line) for line in self.jsonl_path.read_text().splitlines()]
            rows = [r for r in rows if r["epoch"] <= epoch]
        for path in (self.csv_path, self.jsonl_path):
            path.unlink(missing_ok=True)
        for row in rows:
            self._append(row)
        return rows

    def log_epoch(self, row):
        self._append(row)
        metrics_log.info(json.dumps(row))
        if self.writer is not None:
            import tensorflow as tf

            with self.writer.as_default(step=row["epoch"]):
                for key, value in row.items():
                    if key != "epoch":
                        tf.summary.scalar(key, value)
            self.writer.flush()

    def _append(self, row):
        new_file = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self):
        if self.writer is not None:
            self.writer.close()
