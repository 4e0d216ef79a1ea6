"""Nothing lost: real training processes killed, stopped and diverging, then resumed,
compared with an uninterrupted run; bad inputs rejected with a message."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from sectrain.errors import ConfigError
from sectrain.loggers.files import prepare_run_dir
from sectrain.training.stops import outlive_signals_between_jobs, stop_requests
from tests.helpers import RESNET8, make_config
from tests.test_cli import sectrain
from tests.test_inference import write_digit_folder

STEPS_PER_EPOCH = 1437 // 128
RECIPE = (
    RESNET8,
    "model.dropout=0.2",  # its random draws must resume too
    "trainer.ema_decay=0.9",  # and the weights' moving averages, evaluated and saved
    "trainer.deterministic=true",
    "trainer.epochs=2",
    "trainer.global_batch_size=128",
    "logger.progress=false",
)
TIMING = ("images_per_sec", "seconds")


def start(run_dir, *overrides):
    return subprocess.Popen(
        [sys.executable, "-m", "sectrain", *RECIPE, *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkpoint_steps(run_dir):
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("ckpt-*.index"))


def wait_for_checkpoint(run_dir, process, at_least):
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if any(step >= at_least for step in checkpoint_steps(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {at_least}: {process.poll()}")


def metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def weights(run_dir):
    import keras

    import sectrain.layers.attention  # noqa: F401
    import sectrain.layers.common  # noqa: F401

    return [w.numpy() for w in keras.saving.load_model(run_dir / "model.keras").weights]


def assert_same_run(run_dir, reference):
    assert metrics(run_dir) == metrics(reference)  # every epoch exactly once, same values
    for got, want in zip(weights(run_dir), weights(reference)):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted deterministic run, checkpointing every 4 steps."""
    run_dir = tmp_path_factory.mktemp("reference")
    assert start(run_dir, "trainer.checkpoint_every_steps=4").wait() == 0
    return run_dir


@pytest.mark.slow
def test_two_deterministic_runs_are_bit_identical(reference, tmp_path):
    """Slow, and implied by the resume tests, which compare other processes' runs with
    the reference bit for bit."""
    assert start(tmp_path, "trainer.checkpoint_every_steps=4").wait() == 0
    assert_same_run(tmp_path, reference)


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    process = start(tmp_path, "trainer.checkpoint_every_steps=4")
    wait_for_checkpoint(tmp_path, process, STEPS_PER_EPOCH + 4)  # inside epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "model.keras").exists()
    assert start(tmp_path, "trainer.checkpoint_every_steps=4").wait() == 0
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_sigkill_while_saving_every_step_loses_nothing(reference, tmp_path):
    """Slow (about 45 s): three processes, a checkpoint at every step."""
    for kill_after in (3, 14):  # twice, once in each of the first two epochs
        process = start(tmp_path, "trainer.checkpoint_every_steps=1")
        wait_for_checkpoint(tmp_path, process, kill_after)
        process.send_signal(signal.SIGKILL)  # saves take most of each step's time here
        process.wait()
    assert start(tmp_path, "trainer.checkpoint_every_steps=1").wait() == 0
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_saves_reports_interrupted_and_resumes(reference, tmp_path):
    process = start(tmp_path, "trainer.checkpoint_every_steps=4")
    wait_for_checkpoint(tmp_path, process, 4)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM
    stderr = " ".join(stderr.split())
    assert "interrupted: stopped by SIGTERM" in stderr
    assert f"To resume: sectrain {shlex.join(RECIPE)}" in stderr  # quoted for a shell
    assert stderr.endswith(f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] in checkpoint_steps(tmp_path)
    assert start(tmp_path, "trainer.checkpoint_every_steps=4").wait() == 0
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    assert_same_run(tmp_path, reference)


# The weight decay step multiplies every kernel by 1 - lr * wd = -99: the loss overflows
# within a few steps, whatever the data order.
DIVERGING = ("optimizer.lr=100", "optimizer.weight_decay=1.0", "schedule=constant")


def test_ctrl_c_while_tensorflow_loads_stops_with_a_message(tmp_path):
    process = start(tmp_path)
    deadline = time.time() + 60
    # Hydra writes the job's config, then sectrain validates it and imports TensorFlow
    while not (tmp_path / ".hydra" / "config.yaml").is_file() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted" in stderr


class DroppedInterrupt:
    """Sends its own process SIGINT while it is finalized: the KeyboardInterrupt that
    raises there is printed and dropped by Python, as in any finalizer TensorFlow runs."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        self.sent = True  # Python runs the signal's handler here, inside the finalizer


def test_sigint_stops_at_once_before_training_and_after_its_step_in_training():
    with stop_requests() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert stop.signal == signal.SIGINT
    with stop_requests() as stop:
        stop.training = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # recorded, for the loop to honour after its step
        assert stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # a second one stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_a_signal_the_process_ignores_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in `sectrain ... &`
    try:
        with stop_requests() as stop:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            assert stop.signal is None
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_parallel_sweeps_worker_outlives_signals_between_jobs_and_its_jobs_hear_them():
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        outlive_signals_between_jobs()
        for s in previous:  # between jobs: no KeyboardInterrupt, no end of the process
            os.kill(os.getpid(), s)
            time.sleep(0.1)
        with stop_requests() as stop:  # a job
            stop.training = True
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            assert stop.signal == signal.SIGINT
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_job_setup_holds_sigint_back_and_records_it_for_training():
    with stop_requests() as stop:
        with pytest.raises(KeyboardInterrupt), stop.held():  # as while TensorFlow loads
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            held_back = True
        assert held_back
    with stop_requests() as stop:  # a KeyboardInterrupt dropped before: the same stop
        DroppedInterrupt()
        assert stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt), stop.held():
            pass
    with stop_requests() as job:  # the job's record is the one training sees
        with stop_requests() as training:
            assert training is job
            training.training = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert job.signal == signal.SIGTERM


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigint_whose_keyboard_interrupt_was_dropped_still_stops_the_run(tmp_path, monkeypatch):
    import sectrain.train
    from sectrain.train import RunStopped, train

    count_flops = sectrain.train.count_flops

    def interrupted_meanwhile(model):  # in the setup, before the training loop
        DroppedInterrupt()
        return count_flops(model)

    monkeypatch.setattr(sectrain.train, "count_flops", interrupted_meanwhile)
    with pytest.raises(RunStopped) as stopped:
        train(make_config("trainer.epochs=1"), tmp_path)
    assert stopped.value.exit_code == 128 + signal.SIGINT
    assert str(stopped.value) == "stopped by SIGINT before training"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["step"]) == ("interrupted", 0)
    assert checkpoint_steps(tmp_path) == []


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    process = start(tmp_path, *DIVERGING, "trainer.checkpoint_every_steps=1")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert f"by step {summary['step']}" in " ".join(stderr.split())
    assert max(checkpoint_steps(tmp_path), default=0) == summary["step"] - 1


def test_out_of_device_memory_stops_and_resumes_with_micro_batches(tmp_path, monkeypatch):
    import tensorflow as tf

    from sectrain.train import RunStopped, train
    from sectrain.training.loop import TrainingLoop

    train_steps = TrainingLoop.train_steps

    def second_call_exhausts(self, iterator, num_steps):  # as a batch too large for a GPU
        if self.optimizer.iterations.numpy() == 1:
            message = "OOM when allocating tensor with shape[128,16,32,32]\ndetails"
            raise tf.errors.ResourceExhaustedError(None, None, message)
        return train_steps(self, iterator, num_steps)

    monkeypatch.setattr(TrainingLoop, "train_steps", second_call_exhausts)
    run = ("trainer.epochs=1", "trainer.global_batch_size=128", "trainer.checkpoint_every_steps=1")
    with pytest.raises(RunStopped) as stopped:
        train(make_config(*run), tmp_path)
    assert (stopped.value.exit_code, stopped.value.resume_with) == (4, ["trainer.micro_batches=2"])
    assert str(stopped.value).startswith(
        "the device ran out of memory by step 1 (OOM when allocating tensor with "
        "shape[128,16,32,32]); trainer.micro_batches=2 trains the same batch in parts"
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["step"]) == ("out_of_memory", 1)
    assert checkpoint_steps(tmp_path) == [1]

    monkeypatch.undo()  # resumed as the message says
    train(make_config(*run, "trainer.micro_batches=2"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["step"]) == ("completed", summary["steps_per_epoch"])


# `sectrain ARGS...` whose first training call in the process runs out of device memory
# as it does under XLA; an exit handler shows whether Python's teardown ran
OUT_OF_MEMORY_ON_FIRST_CALL = """
import atexit, sys
import tensorflow as tf
from sectrain.cli import main
from sectrain.training.loop import TrainingLoop

train_steps, calls = TrainingLoop.train_steps, []

def first_call_exhausts(self, iterator, num_steps):
    calls.append(num_steps)
    if len(calls) == 1:
        message = "Graph execution error:\\n\\nOut of memory while trying to allocate 146.83GiB."
        raise tf.errors.ResourceExhaustedError(None, None, message)
    return train_steps(self, iterator, num_steps)

TrainingLoop.train_steps = first_call_exhausts
atexit.register(print, "teardown ran")
sys.argv[0] = "sectrain"
main()
"""


@pytest.mark.parametrize("sweep", [False, True])
def test_out_of_device_memory_ends_the_process_with_status_4_without_teardown(tmp_path, sweep):
    # TensorFlow can abort while it frees the tensors of a run whose GPU ran out of memory
    # (seen under XLA): such a process exits without Python's teardown, and a sweep holds
    # the stopped job's tensors until then
    folder = (
        ["-m", "model.attention.ratio=4,8", f"hydra.sweep.dir={tmp_path}"]
        if sweep
        else [f"hydra.run.dir={tmp_path}"]
    )
    result = subprocess.run(
        [sys.executable, "-c", OUT_OF_MEMORY_ON_FIRST_CALL, *folder, RESNET8, "trainer.epochs=1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 4, result.stderr
    assert "teardown ran" not in result.stdout
    stderr = " ".join(result.stderr.split())
    assert "by step 0 (Out of memory while trying to allocate 146.83GiB.)" in stderr
    run_dirs = [tmp_path / "0", tmp_path / "1"] if sweep else [tmp_path]
    statuses = [json.loads((d / "summary.json").read_text())["status"] for d in run_dirs]
    assert statuses == (["out_of_memory", "completed"] if sweep else ["out_of_memory"])
    assert "To resume:" in stderr


@pytest.mark.parametrize(
    "trainer, replicas, advice",
    [
        ({"global_batch_size": 64, "micro_batches": 2}, 2, "trainer.micro_batches=4"),
        ({"global_batch_size": 6}, 2, None),  # 6 images do not split into 2 x 2
        ({"global_batch_size": 64, "sync_bn": True}, 2, None),  # no micro-batches with it
    ],
)
def test_out_of_memory_advises_micro_batches_only_where_they_apply(trainer, replicas, advice):
    import tensorflow as tf

    from sectrain.config import TrainerConfig
    from sectrain.train import out_of_memory

    error = tf.errors.ResourceExhaustedError(None, None, "OOM")
    stopped = out_of_memory(error, 5, TrainerConfig(**trainer), replicas)
    assert stopped.resume_with == ([advice] if advice else None)
    assert (advice or "lower trainer.global_batch_size") in str(stopped)


def test_another_config_is_refused_in_a_run_dir_unless_fresh_start(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    result = sectrain(*RECIPE, "model.attention.ratio=8", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert "holds a run of another config (model.attention.ratio differ)" in " ".join(
        result.stderr.split()
    )
    assert metrics(run_dir) == metrics(reference)  # untouched
    # the run's log records the refusal, after the run's own lines
    assert "ERROR] error: " in (run_dir / "sectrain.log").read_text().splitlines()[-1]
    fresh = ("model.attention.ratio=8", "trainer.fresh_start=true", "trainer.epochs=1")
    result = sectrain(*RECIPE, *fresh, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    (aside,) = run_dir.glob("previous-*")
    assert metrics(aside) == metrics(reference)  # the earlier run is kept, set aside


def test_a_run_dir_resumes_with_more_epochs_other_micro_batches_or_newer_keys(tmp_path):
    def config(*overrides):
        return OmegaConf.to_yaml(OmegaConf.structured(make_config(*overrides)))

    old = yaml.safe_load(config())
    del old["trainer"]["micro_batches"]  # a run made before sectrain had the key
    prepare_run_dir(tmp_path, yaml.safe_dump(old))
    (tmp_path / "checkpoints").mkdir()
    prepare_run_dir(tmp_path, config("trainer.epochs=30", "trainer.micro_batches=2"))
    with pytest.raises(ConfigError, match=r"another config \(trainer.global_batch_size differ"):
        prepare_run_dir(tmp_path, config("trainer.global_batch_size=32"))


def test_corrupt_checkpoint_is_reported_not_a_traceback(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (data,) = run_dir.glob(f"checkpoints/ckpt-{2 * STEPS_PER_EPOCH}.data-*")
    data.write_bytes(data.read_bytes()[:100])
    result = sectrain(*RECIPE, "trainer.epochs=3", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert "cannot be restored" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def bad_folder(kind, root):
    if kind == "empty":
        root.mkdir()
    elif kind == "one_class":
        write_digit_folder(root, per_class=3)
        for name in ("1", "2"):
            shutil.rmtree(root / name)
    elif kind == "not_an_image":
        write_digit_folder(root, per_class=20)
        (root / "1" / "notes.png").write_text("not a picture")
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (["trainer.epochs=0"], "trainer.epochs: must be at least 1. Received: 0"),
        (["optimizer.lr=-1"], "optimizer.lr: must be in (0, 100]. Received: -1"),
        (["model=se_inception_v3"], "data.image_size: inception_v3 needs inputs of at least 75"),
        (["data=folder", "data.path={missing}"], "is not a folder"),
        (["data=folder", "data.path={empty}"], "at least two classes. Found 0 sub-folders"),
        (["data=folder", "data.path={one_class}"], "at least two classes. Found 1 sub-folders"),
        (
            ["data=folder", "data.path={not_an_image}", "data.bad_images=fail"],
            "1 files are not decodable images",
        ),
        (["hydra.run.dir={a_file}/run"], "cannot be written"),
        # os.access says root may write there, but no folder can be made in /proc
        (["hydra.run.dir=/proc/sectrain/run"], "cannot be written"),
    ],
)
def test_bad_inputs_exit_2_with_one_clear_message(args, message, tmp_path):
    paths = {
        "missing": tmp_path / "missing",
        "a_file": tmp_path / "a_file",
        **{k: bad_folder(k, tmp_path / k) for k in ("empty", "one_class", "not_an_image")},
    }
    (tmp_path / "a_file").write_text("")
    args = [a.format(**paths) for a in args]
    run_dir = (
        []
        if any(a.startswith("hydra.run.dir") for a in args)
        else [f"hydra.run.dir={tmp_path}/run"]
    )
    result = sectrain(*args, *run_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr + result.stdout


def test_undecodable_files_are_skipped_with_a_count_by_default(tmp_path):
    root = bad_folder("not_an_image", tmp_path / "images")
    result = sectrain(
        "data=folder",
        f"data.path={root}",
        "trainer.epochs=1",
        "trainer.global_batch_size=8",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr
    assert "skipping 1 files that are not decodable images" in " ".join(
        (result.stdout + result.stderr).split()
    )
    assert os.path.exists(tmp_path / "run" / "summary.json")


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    from sectrain.loggers.files import FileLogger

    logger = FileLogger(tmp_path, tensorboard=False)
    logger.log_epoch({"epoch": 1, "val_top1": 0.5})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 2, "val_to')
    assert logger.restart_after(1) == [{"epoch": 1, "val_top1": 0.5}]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,val_top1", "1,0.5"]
