"""The `sectrain` command: Hydra composes the config, sectrain validates it, then trains.

Everything here runs before TensorFlow is imported, so `--help` and configuration
mistakes answer in well under two seconds.
"""

import argparse
import contextlib
import functools
import importlib.metadata
import json
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from rich.console import Console
from rich.text import Text

from sectrain import __version__
from sectrain.config import check_value, validate
from sectrain.errors import EXIT_STATUS, ConfigError, unknown_choice
from sectrain.loggers.files import error_log
from sectrain.training.stops import (
    handle_stop_signals,
    outlive_signals_between_jobs,
    stop_requests,
)
from sectrain.training.warm_start import check_init_from

log = logging.getLogger("sectrain")
# conf/ of the clone (sectrain/conf links to it); a wheel holds a copy there instead
CONFIG_DIR = (Path(__file__).parent / "conf").resolve()
EXIT_CONFIG_ERROR = 2
OTHER_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# Hydra's modes, short and long: a command line takes one at most
MODE_FLAGS = (
    ("-m", "--multirun"),
    ("-r", "--run"),
    ("-c", "--cfg"),
    ("-i", "--info"),
    ("-sc", "--shell-completion"),
)
SHELL_COMPLETION_FLAGS = MODE_FLAGS[-1]
# Hydra's modes that print and run nothing
PRINTING_FLAGS = ("-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help")
SHELLS = ("bash", "zsh", "fish")
# This command's sweep, as `SweepReport` records it: its folder, (run folder, status) of
# each job that stopped early and let it go on, in the order they stopped, and the signal
# that stopped a parallel sweep (see `stop_parallel_sweep`)
SWEEP = {"dir": None, "stopped": [], "signal": None}
# In a parallel sweep's folder once a signal stopped it: its jobs not yet started skip
STOP_FILE = "stop_requested"
# The RunStopped of each run of this process that ran out of device memory: its
# traceback holds the run's tensors, which are never freed (see `exit_with`)
OUT_OF_MEMORY = []


def fail(message):
    """Prints a user error without a traceback and exits with status 2. The message stays
    on one line in a pipe or a log, where rich would otherwise wrap it at 80 columns."""
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(message)), soft_wrap=True)
    sys.exit(EXIT_CONFIG_ERROR)


def fail_job(error):
    """`fail` in a job, whose run folder Hydra has made: the run's log file records why
    it ended too."""
    error_log.error("error: %s", error)
    fail(error)


def exit_with(status):
    """Exits with `status`; without Python's teardown, once the console and the log
    files are flushed, where a run of this process ran out of device memory. TensorFlow
    can abort while it frees such a run's tensors (seen under XLA on an H100: "Check
    failed: h != kInvalidChunkHandle" at interpreter exit), which turns the status into
    a crash; by then the run's files are written and closed."""
    if OUT_OF_MEMORY:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def version_line():
    """sectrain's version and those of the libraries it runs on (read, not imported)."""
    versions = []
    for name, distribution in (
        ("TensorFlow", "tensorflow"),
        ("Keras", "keras"),
        ("Hydra", "hydra-core"),
    ):
        try:
            versions.append(f"{name} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:  # e.g. installed as tensorflow-cpu
            continue
    return f"sectrain {__version__} ({', '.join(versions)})"


def command_parser(prog, description):
    """The argument parser of a sectrain command: `description` (its docstring) as
    written, and --version. Commands parse with `parse_intermixed_args`, so that options
    may also stand between positional arguments (`sectrain-eval RUN --split train
    data.image_size=320`)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=version_line())
    return parser


def positive_int(text):
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1. Received: {value}")
    return value


def config_groups():
    """Config group -> its options, read from conf/ (e.g. "model/attention" -> [...])."""
    groups = {}
    for path in CONFIG_DIR.rglob("*.yaml"):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        if group != "." and not group.startswith("hydra"):
            groups.setdefault(group, []).append(path.stem)
    return groups


def check_writable(key, folder):
    """Raises ConfigError unless `folder` exists as a writable folder or can be made."""
    path = Path(folder).absolute()
    while not path.exists():
        path = path.parent
    try:
        # made and removed rather than os.access, which says yes to root even where a
        # folder cannot be made (a read-only mount, /proc)
        tempfile.TemporaryDirectory(dir=path).cleanup()
    except OSError:
        raise ConfigError(
            f"{key}: {str(folder)!r} cannot be written ({str(path)!r} is not a writable folder)"
        ) from None


def check_overrides(args):
    """Checks group choices and keys of command-line overrides against conf/ and the schema.
    Returns the parsed overrides.

    Hydra would reject most of these too, but with exit status 1 and no suggestion.
    """
    # key=value, or ~key: a deletion needs no value
    overrides = [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(str(error).splitlines()[0]) from None
    groups = config_groups()
    output_dirs = {"hydra.run.dir": "outputs", "hydra.sweep.dir": "multirun"}  # defaults
    for override in parsed:
        key = override.key_or_group
        if key in output_dirs:
            output_dirs[key] = override.get_value_element_as_str()
        if key.startswith("hydra") or override.is_delete():
            continue
        if key in groups:
            for option in _values(override, as_strings=True):
                if option not in groups[key]:
                    raise unknown_choice(key, option, groups[key])
        else:
            for value in _values(override):
                check_value(key, value)
    for key, folder in output_dirs.items():
        check_writable(key, folder)
    return parsed


def check_compositions(parsed, config_name="config"):
    """Validates the config the command line composes: for a sweep, that of every value of
    every swept key (the other keys at their first value). A mistake thus fails before
    Hydra makes a run folder, and before any job of a sweep trains. Hydra's own settings
    (hydra.*, never swept: see `check_sweeps`) are composed too, so that Hydra's mistakes
    in them show here. Returns the configs."""
    swept = [o for o in parsed if o.is_sweep_override()]
    first = {id(o): (_values(o, as_strings=True) or [None])[0] for o in swept}
    choices = [(o, value) for o in swept for value in _values(o, as_strings=True)]
    configs = []
    for override, value in choices or [(None, None)]:
        lines = []
        for other in parsed:
            chosen = value if other is override else first.get(id(other))
            if other.is_sweep_override() and chosen is None:
                continue  # an interval for Optuna: nothing to list
            lines.append(
                f"{other.get_key_element()}={chosen}"
                if other.is_sweep_override()
                else other.input_line
            )
        configs.append(validate(compose_config(lines, config_name)))
    return configs


def compose_config(overrides, config_name="config"):
    """The config that the `overrides` compose from conf/ (Hydra's own settings applied to
    its `hydra` node, which is left out), not yet validated.

    Raises:
        ConfigError: Hydra cannot apply an override (e.g. one of a key the config does not
            have, which needs a leading `+`); its message on one line.
    """
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except HydraException as error:
        lines = str(error).strip().splitlines()
        cause = str(error.__cause__ or "").strip()
        if len(lines) == 1 and cause:  # "Error merging override X": the reason is OmegaConf's
            lines = [f"{lines[0]}: {cause.splitlines()[0]}"]
        raise ConfigError(" ".join(line.strip() for line in lines)) from None


def check_shell_completion(args):
    """Raises ConfigError unless `args` (with --shell-completion) name what Hydra's shell
    completion is to do: install=SHELL, uninstall=SHELL, or query=SHELL (what the
    installed completion asks)."""
    actions = [a for a in args if not a.startswith("-")]
    action, _, shell = (actions[0] if len(actions) == 1 else "").partition("=")
    if action not in ("install", "uninstall", "query") or shell not in SHELLS:
        raise ConfigError(
            f"--shell-completion: takes install=SHELL or uninstall=SHELL, SHELL one of "
            f'{", ".join(SHELLS)}; e.g. eval "$(sectrain -sc install=bash)" in ~/.bashrc. '
            f"Received: {' '.join(actions) or 'nothing'}"
        )


def check_sweeps(parsed, multirun):
    """Raises ConfigError for a sweep (`key=a,b`, `range(...)`, ...) outside a multirun,
    where Hydra would stop once TensorFlow is loaded (its error report reads every module),
    or for a sweep of Hydra's own settings, which Hydra cannot sweep."""
    for override in parsed:
        if not override.is_sweep_override():
            continue
        if not multirun:
            raise ConfigError(
                f"{override.input_line}: a sweep; add -m to run one job per value "
                f"(sectrain -m {override.input_line}), or write a list as key=[a,b]"
            )
        if override.is_hydra_override():
            raise ConfigError(f"{override.input_line}: Hydra's own settings cannot be swept")


def check_command_line(args, config_name="config"):
    """Raises ConfigError for a mistake in the command line `args` of a Hydra app whose
    primary config is `config_name`."""
    modes = [flags[1] for flags in MODE_FLAGS if any(a.split("=")[0] in flags for a in args)]
    if len(modes) > 1:  # Hydra would end in a traceback
        raise ConfigError(f"{', '.join(modes)}: give one of these at a time")
    if any(a in SHELL_COMPLETION_FLAGS for a in args):
        check_shell_completion(args)  # Hydra then completes a command line; nothing runs
        return
    # the checks read conf/: another primary config or config folder would pass unchecked
    other_configs = [a.split("=")[0] for a in args if a.split("=")[0] in OTHER_CONFIG_FLAGS]
    if other_configs:
        raise ConfigError(
            f"{other_configs[0]}: sectrain reads its configs from {CONFIG_DIR}; add yours to "
            "its groups there (e.g. conf/experiment/mine.yaml, used as +experiment=mine)"
        )
    parsed = check_overrides(args)
    check_sweeps(parsed, multirun="--multirun" in modes)
    bench_keys = [o.key_or_group for o in parsed if o.key_or_group.split(".")[0] == "bench"]
    if bench_keys and config_name != "bench":
        raise ConfigError(f"{bench_keys[0]}: a setting of sectrain-bench; sectrain has no bench.*")
    configs = check_compositions(parsed, config_name)
    launcher = next((o.value() for o in parsed if o.key_or_group == "hydra/launcher"), None)
    if launcher == "slurm" and "--multirun" in modes and not shutil.which("srun"):
        raise ConfigError(
            "hydra/launcher=slurm: submits each job to SLURM, which this machine lacks (no "
            "srun); run the command on the cluster, or use hydra/launcher=parallel here"
        )
    multi_worker = any(c.trainer.strategy == "multi_worker" for c in configs)
    if multi_worker and "--multirun" in modes and launcher != "slurm":
        # TensorFlow sets up a process's communication with the other workers once
        raise ConfigError(
            "trainer.strategy=multi_worker: the jobs of a sweep need a process of their "
            "own on every machine; use hydra/launcher=slurm, or start each job as a "
            "command of its own"
        )


def _values(override, as_strings=False):
    """The values an override takes: one, or each of a sweep's choices."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str() if as_strings else override.value()]
    try:
        return list(override.sweep_string_iterator() if as_strings else override.sweep_iterator())
    except Exception:  # interval sweeps (for Optuna) have no list of values
        return []


def worker_gpu_settings(job_num, n_jobs, visible_devices):
    """The environment a worker process of a parallel local sweep sets before TensorFlow
    starts: with several GPUs (CUDA_VISIBLE_DEVICES, else those nvidia-smi lists), the one
    its first job takes, round robin; and where more workers than GPUs share them, memory
    growth, since TensorFlow otherwise maps nearly all of a GPU's memory in the first
    process to use it, leaving none to the others."""
    if visible_devices is not None:  # set, if only to "" (no GPU)
        gpus = [gpu for gpu in visible_devices.split(",") if gpu]
    elif shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        gpus = [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]
    else:
        gpus = []
    settings = {}
    if len(gpus) > 1:
        settings["CUDA_VISIBLE_DEVICES"] = gpus[job_num % len(gpus)]
    if gpus and (n_jobs < 0 or n_jobs > len(gpus)):  # joblib: -1 = one per CPU core
        settings["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return settings


def is_parallel(launcher):
    """Whether the Hydra `launcher` config runs jobs in worker processes on this machine
    (hydra/launcher=parallel, joblib)."""
    return "Joblib" in launcher.get("_target_", "")


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def run(cfg) -> float:
    """One training job; returns the best validation top-1 accuracy for sweepers (0 for
    a job of a sweep that stopped early, which lets the sweep go on)."""
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    # a worker process of a parallel sweep returns from a stopped job: the sweep's own
    # process ends the sweep once every job is back (see `stop_parallel_sweep`)
    parallel = is_parallel(hydra_config.launcher)
    if parallel:
        outlive_signals_between_jobs()
        if (Path(hydra_config.sweep.dir) / STOP_FILE).is_file():
            log.info("not started: a signal stopped the sweep")
            return 0.0
    try:
        with stop_requests() as stop:  # signals are recorded from here to the end of training
            # Ctrl-C stops at the end of the setup: inside TensorFlow's import it would
            # leave that half done, to fail later with an unrelated error
            with stop.held():
                config = prepare_job(cfg, hydra_config, run_dir)
                from sectrain.train import RunStopped, train  # imports TensorFlow
            try:
                return train(config, run_dir=run_dir)
            except ConfigError as error:  # found with the data, devices or folder at hand
                fail_job(error)
            except RunStopped as stopped:
                return report_stopped_job(stopped, hydra_config, parallel)
    except KeyboardInterrupt:  # before training, or a second Ctrl-C
        if not parallel:
            raise
        log.info("interrupted before its training began, or at once by a second Ctrl-C")
        return 0.0


def report_stopped_job(stopped, hydra_config, parallel):
    """Prints why a job stopped early (a `RunStopped`), with the command that resumes it.
    Returns 0.0 (a sweeper's score) where the sweep goes on, or the sweep's own process
    ends it; else exits with the job's status."""
    message = str(stopped)
    if stopped.resume_with is not None:
        message += f". To resume: {resume_command(hydra_config, stopped.resume_with)}"
    # not wrapped, so that the command can be copied whole
    status = Text.assemble((f"{stopped.status}: ", "bold yellow"), message)
    Console(stderr=True).print(status, soft_wrap=True)
    if stopped.status == "out_of_memory":
        OUT_OF_MEMORY.append(stopped)
    if hydra_config.mode == RunMode.MULTIRUN and (stopped.status in EXIT_STATUS or parallel):
        # one job that diverged or ran out of memory does not end a table or a search:
        # its summary.json says why it stopped (see `SweepReport`); a sweeper scores it 0
        return 0.0
    exit_with(stopped.exit_code)


def prepare_job(cfg, hydra_config, run_dir):
    """Validates a job's config (a mistake exits 2) and, in a worker process of
    hydra/launcher=parallel, sets the process's GPU. Returns the `Config`."""
    try:
        config = validate(cfg)
        check_init_from(config, run_dir)
    except ConfigError as error:
        fail_job(error)
    # the first job a worker process runs sets its GPU before TensorFlow starts, and later
    # jobs there keep it
    if is_parallel(hydra_config.launcher) and "tensorflow" not in sys.modules:
        settings = worker_gpu_settings(
            hydra_config.job.num,
            hydra_config.launcher.get("n_jobs") or 1,  # joblib: None = 1
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        if "TF_FORCE_GPU_ALLOW_GROWTH" in os.environ:  # the user's own setting stays
            settings.pop("TF_FORCE_GPU_ALLOW_GROWTH", None)
        os.environ.update(settings)
        if "CUDA_VISIBLE_DEVICES" in settings:
            log.info("this job's worker process runs on GPU %s", settings["CUDA_VISIBLE_DEVICES"])
        if "TF_FORCE_GPU_ALLOW_GROWTH" in settings:
            log.info("workers share GPUs: TensorFlow takes GPU memory as it needs it")
    return config


class SweepReport(Callback):
    """Records in SWEEP the folder of a sweep and, at its end, the jobs that stopped early
    and let it go on. It reads the summary.json files the sweep's jobs wrote, so it sees
    those that ran in other processes (hydra/launcher=parallel) or on other machines
    (slurm). In a parallel sweep, SIGINT and SIGTERM go to `stop_parallel_sweep`."""

    def on_multirun_start(self, config, **kwargs):
        self.started = time.time()
        SWEEP["dir"] = config.hydra.sweep.dir
        self.previous = {}
        if is_parallel(config.hydra.launcher):
            (Path(SWEEP["dir"]) / STOP_FILE).unlink(missing_ok=True)  # resumed: jobs run
            self.previous = handle_stop_signals(stop_parallel_sweep)

    def on_multirun_end(self, config, **kwargs):
        for s, previous in self.previous.items():
            signal.signal(s, previous)
        summaries = [
            path
            for path in Path(config.hydra.sweep.dir).rglob("summary.json")
            if path.stat().st_mtime >= self.started  # not one of an earlier sweep there
        ]
        for path in sorted(summaries, key=lambda path: path.stat().st_mtime):
            try:
                status = json.loads(path.read_text()).get("status")
            except ValueError:  # sectrain replaces it whole: damaged by other means
                continue
            if status in EXIT_STATUS:
                SWEEP["stopped"].append((str(path.parent), status))


def stop_parallel_sweep(signum, frame):
    """The first SIGINT or SIGTERM to the process of a parallel sweep: its running jobs
    stop after their step with a checkpoint and a summary.json, as a run alone does, its
    jobs not yet started skip, and the command then exits with the command that resumes
    the sweep. Without this the launcher kills the worker processes at once, losing the
    work since each job's last checkpoint. A second SIGINT stops at once."""
    if SWEEP["signal"]:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        return
    SWEEP["signal"] = signum
    stop_file = Path(SWEEP["dir"]) / STOP_FILE
    stop_file.parent.mkdir(parents=True, exist_ok=True)
    stop_file.write_text(signal.Signals(signum).name)
    # SIGTERM, which a job only records: a worker the terminal's Ctrl-C reached too would
    # take a second SIGINT for a request to stop at once
    for worker in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
    Console(stderr=True).print(
        "stopping: the running jobs save a checkpoint after their step (Ctrl-C again: at once)",
        soft_wrap=True,
    )


def resume_command(hydra_config, changes=()):
    """What continues the job of `hydra_config` from its last checkpoint: its command
    line with the overrides `changes` (key=value), pinned to its run folder (or, in a
    sweep, to the sweep's folder)."""
    if hydra_config.mode == RunMode.MULTIRUN:
        return resume_sweep_command(hydra_config.sweep.dir, changes)
    changed = {change.split("=")[0] for change in changes}
    kept = [o for o in hydra_config.overrides.task if o.split("=")[0] not in changed]
    run_dir = f"hydra.run.dir={hydra_config.runtime.output_dir}"
    return shlex.join(["sectrain", *kept, *changes, run_dir])


def resume_sweep_command(sweep_dir, changes=()):
    """What continues the sweep in `sweep_dir`, with the overrides `changes`: each job
    resumes from its last checkpoint, and a completed one ends at once."""
    overrides = [*changes, f"hydra.sweep.dir={shlex.quote(sweep_dir)}"]
    return f"the same sweep with {' '.join(overrides)}"


def entry_point(command):
    """A command's entry point, which ends without a traceback where Ctrl-C stops it
    ("interrupted", status 130; training itself first saves a checkpoint: see
    `stop_requests`) or where its output's reader has gone (`| head`: status 1, as rich
    ends its own writes there)."""

    @functools.wraps(command)
    def main(*args, **kwargs):
        try:
            status = command(*args, **kwargs)
            sys.stdout.flush()  # a reader gone shows here, not as an error at exit
            return status
        except KeyboardInterrupt:
            exit_interrupted(signal.SIGINT, "Ctrl-C")
        except BrokenPipeError:
            # what is left in stdout's buffer goes nowhere, not into a second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            exit_with(1)

    return main


def exit_interrupted(signum, name, sweep_dir=None):
    """Ends a command that signal `signum` (`name`, as the user knows it) stopped: with
    the command that resumes its sweep, if it ran one, and status 128 + signum."""
    console = Console(stderr=True)
    if sweep_dir:  # its jobs stopped too, those in other processes included
        console.print(f"To resume: {resume_sweep_command(sweep_dir)}", soft_wrap=True)
    console.print(Text.assemble(("interrupted", "bold yellow"), f" by {name}"))
    exit_with(128 + signum)


def run_checked(app, config_name="config"):
    """Checks the command line (a mistake exits 2 before Hydra starts), then runs the
    Hydra `app`, whose primary config is `config_name`."""
    if "--version" in sys.argv[1:]:  # else Hydra answers with its own version
        print(version_line())
        return
    try:
        check_command_line(sys.argv[1:], config_name)
    except ConfigError as error:
        fail(error)
    if any(a.split("=")[0] in PRINTING_FLAGS + SHELL_COMPLETION_FLAGS for a in sys.argv[1:]):
        # a reader gone (| head) ends the command quietly, as it ends other Unix filters;
        # Hydra would report each failed write with a traceback
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()


@entry_point  # before training, or a second Ctrl-C during it or in a parallel sweep
def main():
    try:
        run_checked(run)
    except KeyboardInterrupt:
        exit_interrupted(signal.SIGINT, "Ctrl-C", SWEEP["dir"])
    stopped = SWEEP["stopped"]
    if stopped:  # the sweep went on; its exit status says that not all completed
        listing = ", ".join(f"{folder} ({status})" for folder, status in stopped)
        message = f"{len(stopped)} job(s) of the sweep stopped early: {listing}"
        Console(stderr=True).print(message, soft_wrap=True)
    if SWEEP["signal"]:  # a parallel sweep that a signal stopped, its jobs saved
        exit_interrupted(SWEEP["signal"], signal.Signals(SWEEP["signal"]).name, SWEEP["dir"])
    if stopped:
        exit_with(EXIT_STATUS[stopped[0][1]])
