"""Run folders as records: the config, the summary and the metrics of each epoch."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sectrain.config import with_defaults
from sectrain.loggers.files import LOG_FILE, error_log, flatten, metrics_log, read_rows
from sectrain.models import MODELS

# In a run's log file (record format: conf/hydra/job_logging/rich.yaml): an error that
# ended an attempt at the run (`sectrain.cli.fail_job`), with its lines up to the next
# record, and the metrics row of an epoch
_RECORD = r"^\[[^]\n]*\]\[{}\]"
LOGGED_ERROR = re.compile(
    _RECORD.format(re.escape(error_log.name)) + r"\[ERROR\] error: (.*(?:\n(?!\[).*)*)", re.M
)
LOGGED_EPOCH = re.compile(_RECORD.format(re.escape(metrics_log.name)), re.M)

# Settings that do not change what a run measures: runs that differ only in these are
# repeats of one configuration (the seed is what repeats vary).
NOT_CONFIGURATION = (
    "trainer.seed",
    "trainer.fresh_start",
    "trainer.save_model",
    "trainer.checkpoint_every_epochs",
    "trainer.checkpoint_every_steps",
    "trainer.deterministic",
    "trainer.strategy",
    "trainer.steps_per_call",
    "data.data_dir",
    "data.manual_dir",
    "data.path",
    "data.cache",
    "logger.",
    "bench.",
)


@dataclass
class Run:
    path: Path
    config: dict  # nested, as in config.yaml
    summary: dict | None  # summary.json; None: the run has not written one
    epochs: list = field(default_factory=list)  # the rows of metrics.jsonl

    @property
    def status(self):
        if self.summary:
            return self.summary["status"]
        if self.epochs:
            return "unfinished"  # killed, or still running
        return "not started"  # e.g. stopped by a configuration error

    @property
    def message(self):
        """Why the run stopped early: its summary's message or, where it stopped without
        writing a summary, the error its log records after its last epoch (a mistake found
        once its folder was made, such as data that could not be downloaded)."""
        if self.summary:
            return self.summary.get("message", "")
        try:
            log = (self.path / LOG_FILE).read_text(errors="replace")
        except OSError:
            return ""
        errors = list(LOGGED_ERROR.finditer(log))
        epochs = list(LOGGED_EPOCH.finditer(log))
        if not errors or (epochs and epochs[-1].start() > errors[-1].start()):
            return ""  # none, or one that a later attempt went on from
        return " ".join(errors[-1][1].split())

    @property
    def completed(self):
        return self.status == "completed" and bool(self.summary.get("final"))


def configuration(run):
    """What identifies a run's configuration: its settings without seed and bookkeeping,
    with the defaults filled in of the model's options (an option given its default value
    and one left out build the same network) and of keys added to sectrain since the run."""
    run_config = with_defaults(run.config)
    model = run_config["model"]
    if model.get("name") in MODELS:
        options = MODELS.get(model["name"]).filled(model.get("options") or {})
        run_config = {**run_config, "model": {**model, "options": options}}
    return {
        key: value
        for key, value in flatten(run_config).items()
        if not key.startswith(NOT_CONFIGURATION)
    }


def find_runs(paths):
    """The runs in `paths` (run folders, or folders holding them, e.g. a multirun),
    in a stable order. Earlier runs a fresh start set aside (previous-*) are left out."""
    runs = []
    for root in map(Path, paths):
        candidates = [root] + sorted(p for p in root.rglob("*") if p.is_dir())
        for folder in candidates:
            if any(part.startswith("previous-") or part == ".hydra" for part in folder.parts):
                continue
            run = read_run(folder)
            if run:
                runs.append(run)
    return runs


def read_run(folder):
    """The run in `folder`, or None if it holds none (no config.yaml, or one that is not
    sectrain's). A job that stopped before sectrain wrote its config.yaml is read from
    Hydra's copy of the config."""
    config_path = folder / "config.yaml"
    if not config_path.is_file():
        config_path = folder / ".hydra" / "config.yaml"
        if not config_path.is_file():
            return None
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError:
        return None
    if not (isinstance(config, dict) and {"model", "trainer"} <= config.keys()):
        return None  # another program's config.yaml
    config.pop("hydra", None)
    summary_path = folder / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:  # sectrain replaces it whole: damaged by other means
            summary = {"status": "damaged summary.json"}
    return Run(folder, config, summary, read_rows(folder / "metrics.jsonl"))
