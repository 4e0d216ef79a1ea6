"""Real MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1, set up by TF_CONFIG."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import RESNET8


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(command, count=2):
    """Starts `command(index)` in `count` processes forming one TF_CONFIG cluster."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    processes = []
    for index in range(count):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        processes.append(
            subprocess.Popen(
                command(index), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = [p.communicate(timeout=600) for p in processes]
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, results)]


def train_workers(tmp_path, *options):
    """`tests.train_job` on two workers; returns what each saved."""
    outputs = [tmp_path / f"worker{i}" for i in range(2)]
    results = start_workers(
        lambda i: [
            sys.executable,
            "-m",
            "tests.train_job",
            str(outputs[i]),
            "multi_worker",
            *options,
        ]
    )
    for code, _, err in results:
        assert code == 0, err[-3000:]
    first, second = (np.load(output / "run.npz") for output in outputs)
    assert first["replicas"] == 2  # one CPU replica in each worker
    assert len(first.files) == len(second.files) > 10
    assert first["losses"][-1] < first["losses"][0]
    return first, second


def test_two_workers_train_to_identical_weights_and_lower_loss(tmp_path):
    first, second = train_workers(tmp_path)
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])
    # each worker evaluated its part of every batch (360 images in batches of 16: the
    # second worker has only blanks in the last), together the whole validation set once
    np.testing.assert_allclose(first["val_loss"], first["whole_val_loss"], rtol=1e-5)


@pytest.mark.slow
def test_two_workers_train_with_xla_compiling_forward_and_backward(tmp_path):
    first, second = train_workers(tmp_path, "--jit", "--no-sync-bn")
    assert str(first["xla"]) == "forward and backward"
    # each worker keeps batch-norm statistics of its own batches (no sync_bn): the
    # trainable weights, updated with the all-reduced gradients, are the same
    for i in np.flatnonzero(first["trainable"]):
        np.testing.assert_array_equal(first[f"final_{i}"], second[f"final_{i}"])


def sectrain_workers(run_dir, epochs):
    return start_workers(
        lambda i: [
            sys.executable,
            "-m",
            "sectrain",
            RESNET8,
            "trainer.strategy=multi_worker",
            f"trainer.epochs={epochs}",
            "trainer.global_batch_size=128",
            "trainer.micro_batches=2",  # each worker: two passes of 32, one update
            "trainer.ema_decay=0.9",  # the averages, on each worker, checkpointed by all
            "logger.progress=false",
            f"hydra.run.dir={run_dir}",
        ]
    )


def test_only_the_chief_writes_the_run_folder_and_workers_resume_from_it(tmp_path):
    run_dir = tmp_path / "run"
    results = sectrain_workers(run_dir, epochs=1)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["replicas"] == 2  # one CPU replica on each of two workers
    assert summary["strategy"] == "CollectiveAllReduceStrategy"  # MultiWorkerMirroredStrategy
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]  # one writer
    assert "epoch" in results[0][1] and "epoch" not in results[1][1]  # the worker is quiet

    results = sectrain_workers(run_dir, epochs=2)  # the same command, one epoch more
    for code, _, err in results:
        assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    log = (run_dir / "sectrain.log").read_text()
    assert log.count("resumed from") == 1  # the chief's log, which the worker leaves alone
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    steps_per_epoch = 1437 // 128  # checkpoints are numbered by step
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.index")) == [
        f"ckpt-{steps_per_epoch}.index",
        f"ckpt-{2 * steps_per_epoch}.index",
    ]
