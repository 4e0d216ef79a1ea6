"""The run folder's metric files: metrics.csv, metrics.jsonl, TensorBoard events, and
summary.json, each written so that an interrupted write leaves the old file whole."""

import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path

import yaml

from sectrain.config import with_defaults
from sectrain.errors import ConfigError

# The run's log file (hydra.job.name in conf/config.yaml) and the loggers that write to
# it alone (conf/hydra/job_logging/rich.yaml): each epoch's metrics row, and the error
# that ended the run, which the console shows in its own form
LOG_FILE = "sectrain.log"
metrics_log = logging.getLogger("sectrain.metrics")
error_log = logging.getLogger("sectrain.log_file")


def write_json(path, data):
    """Writes JSON atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def close_log_files():
    """Replaces every logging handler that writes to a file with a NullHandler: the run's
    log file, which Hydra opens in each process of a job, is then the chief worker's
    alone, and a logger that wrote to the file only falls silent (rather than to
    logging's last resort, stderr)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):  # not placeholders
            if isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
                handler.close()
                logger.addHandler(logging.NullHandler())


# Keys that may change between a run and its resumption: they change neither the model
# nor the order of the computation (more epochs, checkpoint frequency, logging, ...).
RESUMABLE_CHANGES = (
    "trainer.epochs",
    "trainer.fresh_start",
    "trainer.checkpoint_every_steps",
    "trainer.checkpoint_every_epochs",
    "trainer.steps_per_call",
    "trainer.micro_batches",  # e.g. resumed on a GPU with less memory
    "trainer.save_model",
    "logger.",
    "bench.",
)


def read_rows(path):
    """The rows of a metrics.jsonl file (none if there is no such file), up to a line
    that a kill cut short."""
    rows = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def flatten(config, prefix=""):
    """{"a": {"b": [1]}} -> {"a.b": (1,)}: dotted keys, lists as tuples (so that values
    compare and hash); an empty section adds nothing."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def changed_keys(old_yaml, new_yaml):
    """The dotted keys whose values differ between two configs (as YAML); a key that the
    old one lacks (added to sectrain since) counts at its default."""
    old = flatten(with_defaults(yaml.safe_load(old_yaml) or {}))
    new = flatten(yaml.safe_load(new_yaml) or {})
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def prepare_run_dir(run_dir, config_yaml, fresh_start=False):
    """Makes `run_dir` ready for a run of `config_yaml`.

    A run dir that holds checkpoints of the same config resumes. One that holds another
    config is refused, naming the keys that differ, unless `fresh_start`, which moves
    the earlier run's files into `previous-<time>/` inside it (nothing is deleted).

    Raises:
        ConfigError: the folder cannot be written, or holds a run of another config.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"hydra.run.dir: {str(run_dir)!r} cannot be written ({error.strerror})"
        ) from None
    config_path = run_dir / "config.yaml"
    has_run = (run_dir / "checkpoints").exists() or (run_dir / "metrics.jsonl").exists()
    if has_run and config_path.exists():
        differ = [
            k
            for k in changed_keys(config_path.read_text(), config_yaml)
            if not k.startswith(RESUMABLE_CHANGES)
        ]
        if fresh_start:
            aside = run_dir / time.strftime("previous-%Y%m%d-%H%M%S")
            aside.mkdir()
            for path in list(run_dir.iterdir()):
                if path != aside and path.name not in (".hydra", LOG_FILE):
                    shutil.move(str(path), aside / path.name)
        elif differ:
            raise ConfigError(
                f"hydra.run.dir: {str(run_dir)!r} holds a run of another config "
                f"({', '.join(differ)} differ). Use another run dir, or "
                "trainer.fresh_start=true to set that run aside and start anew"
            )
    config_path.write_text(config_yaml)


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
        rows = [r for r in read_rows(self.jsonl_path) if r["epoch"] <= epoch]
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
