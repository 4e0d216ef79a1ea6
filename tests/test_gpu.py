"""What only a GPU shows: a batch that does not fit, micro-batches and mixed precision
under XLA, a parallel sweep whose workers share a GPU, a mirrored strategy over GPUs.
Run with `pytest -m gpu` on a machine with NVIDIA GPUs; elsewhere they are skipped."""

import json
import math
import shutil
import subprocess

import pytest

from tests import test_cli
from tests.helpers import RESNET8


def gpu_memory_mib():
    """Each NVIDIA GPU's memory in MiB, as nvidia-smi lists them (asked of nvidia-smi, not
    of TensorFlow, which would take the GPUs' memory from the runs this module starts)."""
    if not shutil.which("nvidia-smi"):
        return []
    query = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    result = subprocess.run(query, capture_output=True, text=True)
    return [int(line) for line in result.stdout.split()] if result.returncode == 0 else []


GPUS = gpu_memory_mib()
# one process at a time on the GPUs (--dist loadgroup): each run takes a GPU's memory
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.xdist_group("gpu"),
    pytest.mark.skipif(not GPUS, reason="needs an NVIDIA GPU"),
]
# The outputs of WRN-16-8's layers (with SE) hold 15.8 MB per 32x32 image in float32,
# most of which training keeps for the backward pass
WRN_BYTES_PER_IMAGE = 15.8e6
WRN = ("model=se_wrn16_8", "data=synthetic_cifar", "trainer.epochs=1", "logger.progress=false")


def sectrain(*args, env=None):
    """Runs `sectrain ARGS...` on the first GPU, unless `env` names others."""
    gpus = {"CUDA_VISIBLE_DEVICES": "0", **(env or {})}
    # each run takes well under 5 minutes: a hang fails its test, not the session
    return test_cli.sectrain(*args, env=gpus, timeout=300)


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def batch_beyond_gpu():
    """A global batch whose layer outputs take about four times the largest GPU's memory
    or more: a power of two, so that it splits into micro-batches of 256."""
    images = 4 * max(GPUS) * 2**20 / WRN_BYTES_PER_IMAGE
    return 2 ** math.ceil(math.log2(images))


def test_a_batch_beyond_the_gpu_stops_out_of_memory_then_resumes_in_micro_batches(tmp_path):
    # without XLA, which can spend many minutes compiling such a step before it fails
    batch = batch_beyond_gpu()
    run = (
        *WRN,
        f"data.synthetic.images={batch}",
        f"trainer.global_batch_size={batch}",
        "trainer.jit_compile=false",
        f"hydra.run.dir={tmp_path}",
    )
    result = sectrain(*run)
    assert result.returncode == 4, result.stderr[-3000:]
    stderr = " ".join(result.stderr.split())
    assert "out_of_memory:" in stderr and "trainer.micro_batches=2" in stderr, stderr[-3000:]
    assert summary(tmp_path)["status"] == "out_of_memory"

    result = sectrain(*run, f"trainer.micro_batches={batch // 256}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(tmp_path)["status"] == "completed"


def test_a_sweep_goes_on_after_a_job_that_runs_out_of_memory(tmp_path):
    batch = batch_beyond_gpu()
    result = sectrain(
        "-m",
        *WRN,
        f"data.synthetic.images={batch}",
        f"trainer.global_batch_size={batch},256",
        "trainer.jit_compile=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 4, result.stderr[-3000:]  # the status of the job that stopped
    statuses = [summary(tmp_path / job)["status"] for job in ("0", "1")]
    assert statuses == ["out_of_memory", "completed"]


def test_mixed_precision_and_micro_batches_under_xla_resume_with_other_micro_batches(tmp_path):
    common = (RESNET8, "trainer.precision=mixed_float16", f"hydra.run.dir={tmp_path}")
    result = sectrain(*common, "trainer.epochs=1", "trainer.micro_batches=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(tmp_path)["xla"] != "none"  # XLA is on by default with a GPU
    result = sectrain(*common, "trainer.epochs=2", "trainer.micro_batches=4")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]
    assert math.isfinite(summary(tmp_path)["final"]["val_loss"])


def test_two_workers_of_a_parallel_sweep_share_one_gpu(tmp_path):
    result = sectrain(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        RESNET8,
        "model.attention.ratio=8,16",
        "trainer.epochs=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert summary(tmp_path / job)["status"] == "completed"
        assert "workers share GPUs" in (tmp_path / job / "sectrain.log").read_text()


@pytest.mark.skipif(len(GPUS) < 2, reason="needs two GPUs")
def test_a_mirrored_strategy_trains_over_two_gpus(tmp_path):
    result = sectrain(
        RESNET8,
        "trainer.strategy=mirrored",
        "trainer.epochs=1",
        f"hydra.run.dir={tmp_path}",
        env={"CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(tmp_path)["replicas"] == 2
