"""The `sectrain` command as a user runs it, in subprocesses."""

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sectrain import __version__
from sectrain.cli import entry_point
from tests.helpers import RESNET8


def sectrain(*args, importtime=False, env=None, timeout=600):
    """Runs `sectrain ARGS...`, with the variables `env` added to the environment; returns
    the completed process (stdout and stderr as text)."""
    python = [sys.executable, "-X", "importtime"] if importtime else [sys.executable]
    return subprocess.run(
        [*python, "-m", "sectrain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def imported_tensorflow(result):
    """Whether `-X importtime` listed TensorFlow or a module of it, at any depth of the
    import tree (a lazy module that loads lists its modules, not itself)."""
    names = [
        line.split("|")[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]
    return any(name == "tensorflow" or name.startswith("tensorflow.") for name in names)


def test_looking_through_the_loaded_modules_does_not_load_tensorflow():
    # Hydra's error report calls inspect.stack(), which reads every loaded module's file
    code = (
        "import inspect, sys; import sectrain.cli, sectrain.models; inspect.stack(); "
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_wheel_carries_the_configs_and_its_command_runs_outside_the_clone(tmp_path):
    clone = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"  # built from a copy: the build writes beside its sources
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("sectrain", "conf"):
        shutil.copytree(clone / name, source / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(clone / name, source)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    built = subprocess.run([*build, "-w", tmp_path, source], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("sectrain-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {n for n in archive.namelist() if n.startswith("sectrain/conf/")}
        archive.extractall(tmp_path / "site")
    configs = {
        f"sectrain/conf/{p.relative_to(clone / 'conf')}" for p in clone.glob("conf/**/*.yaml")
    }
    assert packed == configs and len(configs) > 80

    installed = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    command = [sys.executable, "-m", "sectrain", "model=se_resnet50", "--cfg", "job"]
    composed = subprocess.run(command, capture_output=True, text=True, env=installed, cwd=tmp_path)
    assert composed.returncode == 0, composed.stderr
    assert "name: resnet50" in composed.stdout
    code = "import sectrain.cli as cli; print(cli.CONFIG_DIR)"  # the wheel's, not the clone's
    where = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=installed, cwd=tmp_path
    )
    assert where.stdout.strip() == str(tmp_path / "site" / "sectrain" / "conf")


def test_help_lists_groups_and_keys_without_importing_tensorflow():
    result = sectrain("--help", importtime=True)
    assert result.returncode == 0
    assert (
        "model: " in result.stdout and "model/attention: eca, none, scse, se, sse" in result.stdout
    )
    assert "global_batch_size" in result.stdout and "timed_steps" not in result.stdout
    assert not imported_tensorflow(result)


@pytest.mark.parametrize(
    "args", [["--info"], ["--cfg", "job"], ["--help"], ["-sc", "install=bash"]]
)
def test_a_reader_gone_ends_hydras_output_without_a_traceback(args):
    # sectrain --info | head, head gone before Hydra writes
    process = subprocess.Popen(
        [sys.executable, "-m", "sectrain", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()
    stderr = process.communicate(timeout=300)[1].decode()
    assert process.returncode == -signal.SIGPIPE  # as `cat FILE | head` ends cat
    assert stderr == ""


def test_bench_help_names_sectrain_bench_and_its_bench_keys():
    result = subprocess.run(
        [sys.executable, "-m", "sectrain.benchmark.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("sectrain-bench: images/s of a config and its variants")
    assert "timed_steps: 20" in result.stdout and "global_batch_size" in result.stdout


def test_version_names_sectrain_and_its_libraries_without_importing_tensorflow():
    result = sectrain("--version", importtime=True)
    assert result.returncode == 0
    assert result.stdout.startswith(f"sectrain {__version__} (TensorFlow 2.")
    assert not imported_tensorflow(result)


@pytest.mark.parametrize(
    "args, message",
    [
        (["model=se_resnet51"], "model: unknown value 'se_resnet51'"),
        (["data=cifar11"], "Did you mean 'cifar10'?"),
        (["optimizer=adamm"], "Did you mean 'adam'?"),
        (["model.name=resnet05"], "model.name: unknown value 'resnet05'"),
        (["model.attention.ratio=0"], "model.attention.ratio: must be at least 1. Received: 0"),
        (
            ["trainer.global_batch_size=-4"],
            "trainer.global_batch_size: must be at least 1. Received: -4",
        ),
        (["trainer.epocs=3"], "Did you mean 'epochs'?"),
        (["schedule.milestones=[30,b]"], "schedule.milestones[1]: Value 'b' of type 'str'"),
        (
            ["trainer.strategy=mirrored", "trainer.jit_compile=true", "trainer.sync_bn=true"],
            "trainer.jit_compile: XLA cannot compile batch norm",
        ),
        # the second job's value fails before the first job trains
        (["-m", "model.attention.ratio=4,0"], "model.attention.ratio: must be at least 1"),
        # keys Hydra cannot set, add or delete in the composed config
        (["model.options.growth_rate=24"], "use +model.options.growth_rate=24"),
        (["+trainer.epochs=3"], "An item is already at 'trainer.epochs'"),
        (["~model.options.depths"], "'model.options.depths' does not exist"),
        (["~trainer.epochs"], "~trainer.epochs: TrainerConfig (DictConfig) does not support"),
        # the command line is checked against conf/, so no other config folder or file
        (["--config-dir", "/tmp"], "--config-dir: sectrain reads its configs from"),
        (["-cn=bench"], "-cn: sectrain reads its configs from"),
        (["-sc"], "--shell-completion: takes install=SHELL or uninstall=SHELL"),
        # a sweep needs -m: Hydra would stop too, but only after loading TensorFlow
        (["trainer.epochs=1,2"], "trainer.epochs=1,2: a sweep; add -m to run one job per value"),
        # Hydra's modes exclude each other
        (["-m", "--cfg", "job"], "--multirun, --cfg: give one of these at a time"),
        (["--info=config", "-r"], "--run, --info: give one of these at a time"),
    ],
)
def test_config_mistakes_exit_2_with_a_message_and_no_traceback(args, message, tmp_path):
    result = sectrain(
        *args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep", importtime=True
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "import time:" not in line]
    assert any(message in line for line in errors), errors  # one line, however long
    assert "Traceback" not in result.stderr + result.stdout
    assert not imported_tensorflow(result)
    assert not list(tmp_path.iterdir())  # no run folder was made


def test_shell_completion_completes_config_groups_and_keys():
    script = sectrain("--shell-completion", "install=bash")
    assert script.returncode == 0 and "complete -o nospace" in script.stdout
    for line, completions in [
        ("sectrain model=se_resnext5", ["model=se_resnext50"]),
        ("sectrain model=se_resnet50 trainer.glo", ["trainer.global_batch_size="]),
    ]:
        query = subprocess.run(
            [sys.executable, "-m", "sectrain", "-sc", "query=bash"],
            env={**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert query.stdout.split() == completions, query.stderr


def test_one_run_writes_the_whole_run_folder(tmp_path):
    result = sectrain("trainer.epochs=1", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "cifar_resnet20 attention=se" in result.stdout and "MFLOPs" in result.stdout
    assert "val top-1" in result.stdout  # the per-epoch table
    expected = {
        "config.yaml",
        "sectrain.log",
        "metrics.csv",
        "metrics.jsonl",
        "model.keras",
        "summary.json",
    }
    assert expected <= {p.name for p in tmp_path.iterdir()}
    saved_config = (tmp_path / "config.yaml").read_text()
    assert "name: cifar_resnet20" in saved_config and "bench:" not in saved_config
    assert "bench:" not in result.stdout  # sectrain-bench's settings
    assert '"val_top1"' in (tmp_path / "sectrain.log").read_text()  # metrics rows in the log
    assert list((tmp_path / "tensorboard").iterdir())


def test_sweep_runs_one_job_per_value_each_with_its_folder(tmp_path):
    result = sectrain(
        "-m",
        "model.attention.ratio=4,16",
        RESNET8,
        "optimizer.lr=100,0.1",  # two jobs diverge: the sweep goes on
        "optimizer.weight_decay=10",
        "schedule=constant",
        "trainer.epochs=1",
        "trainer.global_batch_size=64",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 3, result.stderr  # that of the first job that stopped
    stderr = " ".join(result.stderr.split())
    assert f"2 job(s) of the sweep stopped early: {tmp_path / '0'} (diverged), " in stderr
    jobs = ("0", "1", "2", "3")
    summaries = [json.loads((tmp_path / job / "summary.json").read_text()) for job in jobs]
    assert [(s["attention"]["ratio"], s["status"]) for s in summaries] == [
        (4, "diverged"),
        (4, "completed"),
        (16, "diverged"),
        (16, "completed"),
    ]
    assert stderr.count("diverged: the training loss became") == 2
    assert summaries[0]["parameters"]["trainable"] > summaries[2]["parameters"]["trainable"]


@pytest.mark.slow
def test_default_command_reaches_98_percent_on_digits(tmp_path):
    """The README's first command: SE-ResNet-20 on the embedded digits, 15 epochs
    (slow: about 90 s on 2 CPU cores)."""
    result = sectrain(f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final"]["val_top1"] >= 0.98


@pytest.mark.slow
def test_zero_init_last_steadies_se_shufflenet_at_lr_0_1(tmp_path):
    """The README's figures: SE-ShuffleNet on digits at lr 0.1, 5 epochs, diverges in its
    first epoch with the published initialisation and trains with zero_init_last (slow:
    about 90 s)."""
    summaries = {}
    for setting in ("false", "true"):
        run = tmp_path / setting
        result = sectrain(
            "model=se_shufflenet",
            "trainer.epochs=5",
            f"+model.options.zero_init_last={setting}",
            f"hydra.run.dir={run}",
        )
        assert result.returncode == 0, result.stderr
        summaries[setting] = [
            json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
        ]
    assert summaries["false"][0]["train_loss"] > 10
    assert summaries["true"][0]["train_loss"] < 2
    assert max(r["val_top1"] for r in summaries["true"]) >= 0.95


def test_ctrl_c_ends_a_command_with_a_message_and_status_130(capsys):
    @entry_point
    def command():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        command()
    assert stopped.value.code == 130 and "interrupted by Ctrl-C" in capsys.readouterr().err


def test_every_command_ends_through_entry_point_without_a_traceback():
    commands = importlib.metadata.distribution("sectrain").entry_points
    assert len(commands) == 7
    for command in commands:
        assert hasattr(command.load(), "__wrapped__"), command.value  # by entry_point
