"""Sweeps in separate processes (joblib launcher) and hyper-parameter search (Optuna)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from hydra.types import RunMode
from omegaconf import OmegaConf

from sectrain import cli
from sectrain.cli import SweepReport, resume_command, worker_gpu_settings
from tests.helpers import RESNET8
from tests.test_cli import sectrain


def test_parallel_launcher_runs_each_job_in_its_own_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # no GPU here: TensorFlow ignores it
    result = sectrain(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=3",  # more workers than GPUs: they share them
        RESNET8,
        "optimizer.lr=100,0.1",  # the first job diverges: the sweep goes on
        "optimizer.weight_decay=10",
        "schedule=constant",
        "trainer.epochs=1",
        "trainer.global_batch_size=64",
        f"hydra.sweep.dir={tmp_path}",
    )
    # the job that stopped ran in another process: the command still reports it
    assert result.returncode == 3, result.stderr
    stderr = " ".join(result.stderr.split())
    assert f"1 job(s) of the sweep stopped early: {tmp_path / '0'} (diverged)" in stderr
    summaries = [json.loads((tmp_path / job / "summary.json").read_text()) for job in ("0", "1")]
    assert [s["status"] for s in summaries] == ["diverged", "completed"]
    # the first job of a worker process pins it to a GPU, round robin by job number, and
    # lets TensorFlow take memory as it needs it, since workers share GPUs
    log = (tmp_path / "0" / "sectrain.log").read_text()
    assert "this job's worker process runs on GPU 0" in log
    assert "workers share GPUs: TensorFlow takes GPU memory as it needs it" in log


@pytest.mark.slow
def test_optuna_search_tunes_lr_weight_decay_and_ratio(tmp_path):
    result = sectrain(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "trainer.epochs=1",
        "trainer.global_batch_size=256",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    summaries = [json.loads((tmp_path / str(i) / "summary.json").read_text()) for i in range(3)]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "model.attention.ratio",
    }
    assert best["best_value"] == max(s["best"]["val_top1"] for s in summaries)


def test_the_stopped_jobs_of_a_sweep_are_those_it_ran(tmp_path, monkeypatch):
    def job(folder, status):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "summary.json").write_text(json.dumps({"status": status}))

    job("0", "diverged")  # from an earlier sweep into the same folder
    os.utime(tmp_path / "0" / "summary.json", (0, 0))
    monkeypatch.setattr(cli, "SWEEP", {"dir": None, "stopped": [], "signal": None})
    launcher = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "launcher": launcher}})
    callback = SweepReport()
    callback.on_multirun_start(config)
    assert cli.SWEEP["dir"] == str(tmp_path)
    job("1", "completed")
    job("2", "out_of_memory")
    job("3", "diverged")
    job("4", "completed")
    (tmp_path / "4" / "summary.json").write_text('{"status": "comp')  # damaged by hand
    # job 3 stopped first: it sets the exit status
    os.utime(tmp_path / "3" / "summary.json", (callback.started + 1,) * 2)
    os.utime(tmp_path / "2" / "summary.json", (callback.started + 2,) * 2)
    callback.on_multirun_end(config)
    assert cli.SWEEP["stopped"] == [
        (str(tmp_path / "3"), "diverged"),
        (str(tmp_path / "2"), "out_of_memory"),
    ]


def test_ctrl_c_in_a_sweep_names_the_command_that_resumes_it(monkeypatch, capsys):
    def interrupted(app, config_name="config"):
        cli.SWEEP["dir"] = "/runs/a b"  # as the sweep's start records it
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "SWEEP", {"dir": None, "stopped": [], "signal": None})
    monkeypatch.setattr(cli, "run_checked", interrupted)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 130
    stderr = capsys.readouterr().err
    assert "To resume: the same sweep with hydra.sweep.dir='/runs/a b'" in stderr
    assert "interrupted by Ctrl-C" in stderr


@pytest.mark.slow  # the stop logic is also checked in this process, by the Ctrl-C tests beside it
@pytest.mark.parametrize("signalled", ["every process, as a terminal's Ctrl-C", "the sweep's"])
def test_a_stopped_parallel_sweep_lets_its_jobs_save_then_resumes(tmp_path, signalled):
    command = [
        *(sys.executable, "-m", "sectrain", "-m", "hydra/launcher=parallel", RESNET8),
        *("trainer.seed=0,1,2", "trainer.epochs=10", "trainer.global_batch_size=128"),
        *("logger.progress=false", f"hydra.sweep.dir={tmp_path}"),
    ]
    # its own process group, as a shell makes for a command: a Ctrl-C signals all of it
    sweep = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = [tmp_path / job / "metrics.jsonl" for job in ("0", "1")]  # jobs 0 and 1 run
    deadline = time.time() + 300
    while not all(p.is_file() and p.read_text() for p in metrics) and time.time() < deadline:
        time.sleep(0.05)
    if signalled == "the sweep's":  # its jobs hear of it from the sweep's process
        sweep.send_signal(signal.SIGINT)
    else:
        os.killpg(sweep.pid, signal.SIGINT)
    _, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, stderr[-3000:]
    stderr = " ".join(stderr.split())
    assert f"To resume: the same sweep with hydra.sweep.dir={tmp_path}" in stderr
    assert stderr.endswith("interrupted by SIGINT")
    for job in ("0", "1"):  # each saved its last step, as a run alone does
        summary = json.loads((tmp_path / job / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert (tmp_path / job / "checkpoints" / f"ckpt-{summary['step']}.index").is_file()
    assert not (tmp_path / "2" / "summary.json").exists()  # not started: nothing to save
    # resumed, shortened to 3 epochs: the jobs that ran continue, and job 2 runs
    resume = [*command, "trainer.epochs=3"]
    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for job in ("0", "1", "2"):
        assert json.loads((tmp_path / job / "summary.json").read_text())["status"] == "completed"
        rows = (tmp_path / job / "metrics.jsonl").read_text().splitlines()
        epochs = [json.loads(row)["epoch"] for row in rows]
        assert epochs == list(range(1, max(3, len(epochs)) + 1))  # each epoch once


def test_a_second_ctrl_c_stops_a_parallel_sweep_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "SWEEP", {"dir": str(tmp_path), "stopped": [], "signal": None})
    monkeypatch.setattr(cli.multiprocessing, "active_children", lambda: [])  # no workers
    cli.stop_parallel_sweep(signal.SIGTERM, None)
    assert cli.SWEEP["signal"] == signal.SIGTERM
    assert (tmp_path / cli.STOP_FILE).read_text() == "SIGTERM"  # jobs yet to start skip
    cli.stop_parallel_sweep(signal.SIGTERM, None)  # recorded already
    with pytest.raises(KeyboardInterrupt):
        cli.stop_parallel_sweep(signal.SIGINT, None)


def test_parallel_jobs_take_gpus_round_robin_and_grow_their_memory_where_they_share_one():
    settings = [worker_gpu_settings(n, 3, "0,1,2") for n in range(4)]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in settings] == ["0", "1", "2", "0"]
    assert not any("TF_FORCE_GPU_ALLOW_GROWTH" in s for s in settings)  # a GPU each
    # two workers on one GPU: nothing to share out, but memory to share
    assert worker_gpu_settings(1, 2, "5") == {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert worker_gpu_settings(1, 1, "5") == {}
    four_on_two = worker_gpu_settings(3, 4, "0,1")
    assert four_on_two == {"CUDA_VISIBLE_DEVICES": "1", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert "TF_FORCE_GPU_ALLOW_GROWTH" in worker_gpu_settings(0, -1, "0,1")  # a worker per core


def test_a_job_validates_its_config_with_tensorflow_unloaded_to_pick_its_gpu():
    # a job pins its worker process to a GPU only where TensorFlow is not in sys.modules,
    # not even as a lazy module that has yet to load
    code = (
        "import sys; from sectrain.cli import compose_config; "
        "from sectrain.config import validate; "
        "validate(compose_config(['model=se_resnet50'])); print('tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize(
    "mode, changes, expected",
    [
        (
            RunMode.RUN,
            [],
            "sectrain model=se_resnet50 trainer.micro_batches=2 'model.attention.stages=[3, 4]' "
            "'hydra.run.dir=/runs/a b/0'",
        ),
        (RunMode.MULTIRUN, [], "the same sweep with hydra.sweep.dir='/runs/a b'"),
        (  # after running out of memory: the change replaces the job's own value
            RunMode.RUN,
            ["trainer.micro_batches=4"],
            "sectrain model=se_resnet50 'model.attention.stages=[3, 4]' "
            "trainer.micro_batches=4 'hydra.run.dir=/runs/a b/0'",
        ),
        (
            RunMode.MULTIRUN,
            ["trainer.micro_batches=4"],
            "the same sweep with trainer.micro_batches=4 hydra.sweep.dir='/runs/a b'",
        ),
    ],
)
def test_a_stopped_job_names_the_command_that_resumes_it(mode, changes, expected):
    hydra_config = OmegaConf.create(
        {
            "mode": mode,
            "sweep": {"dir": "/runs/a b"},
            "runtime": {"output_dir": "/runs/a b/0"},
            "overrides": {
                "task": [
                    "model=se_resnet50",
                    "trainer.micro_batches=2",
                    "model.attention.stages=[3, 4]",
                ]
            },
        }
    )
    assert resume_command(hydra_config, changes) == expected
