"""The training loop and a whole run, in process, on real data (digits) and mock TFDS."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sectrain.config import TrainerConfig
from sectrain.data.pipeline import make_pipelines, val_steps
from sectrain.data.sources import load_source
from sectrain.errors import ConfigError
from sectrain.train import batch_parts, start_session, train, use_jit
from sectrain.training.strategy import make_strategy
from tests.helpers import make_config, train_weights, validation_arrays

SE = {"kind": "se", "ratio": 4}


def assert_same_updates(initial, got, want):
    """The weights moved, and by the same amounts up to float32 summation order."""
    got = np.concatenate([(w - w0).ravel() for w, w0 in zip(got, initial)])
    want = np.concatenate([(w - w0).ravel() for w, w0 in zip(want, initial)])
    assert np.abs(want).max() > 1e-3
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()


def trainable_indices(model):
    """Where the trainable weights are in `model.variables` (and in `train_weights`'s lists)."""
    return [i for i, v in enumerate(model.variables) if v.trainable]


def test_two_replica_mirrored_with_sync_bn_matches_one_device():
    mirrored, initial, distributed, _ = train_weights("mirrored", steps=2)
    assert mirrored.strategy.num_replicas_in_sync == 2
    single, same_initial, reference, _ = train_weights("one_device", steps=2)
    assert single.strategy.num_replicas_in_sync == 1
    for a, b in zip(initial, same_initial):
        np.testing.assert_array_equal(a, b)
    assert_same_updates(initial, distributed, reference)


def test_xla_under_a_mirrored_strategy_compiles_the_passes_and_matches():
    # The whole step cannot be compiled there: the optimizer's update is a merge_call.
    options = {"steps": 2, "sync_bn": False, "evaluate": True}
    compiled, initial, got, _ = train_weights("mirrored", jit_compile=True, **options)
    reference, _, want, _ = train_weights("mirrored", jit_compile=False, **options)
    assert compiled.strategy.num_replicas_in_sync == 2
    assert (compiled.xla, reference.xla) == ("forward and backward", "none")
    assert_same_updates(initial, got, want)
    # evaluation: the forward pass compiled, the metrics outside
    np.testing.assert_allclose(
        compiled.results("val")["loss"], reference.results("val")["loss"], rtol=2e-3
    )


def test_several_steps_per_call_equal_one_step_per_call():
    *_, fused, _ = train_weights("one_device", steps=4, steps_per_call=2)
    *_, single, _ = train_weights("one_device", steps=4, steps_per_call=1)
    for got, want in zip(fused, single):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_micro_batches_on_one_device_train_as_replicas_do():
    # Two micro-batches of 8 on one device, and two replicas of 8 without synchronised
    # batch norm, normalise the same halves of the batch by their own statistics and add
    # up the same gradients and the L2 penalty once. (Batch-norm moving statistics
    # differ: updated twice in a row, not averaged.) One step: later ones differ by
    # float32 rounding that this small network amplifies.
    micro, initial, got, micro_loss = train_weights(
        "one_device", steps=1, sync_bn=False, micro_batches=2
    )
    _, _, want, replicas_loss = train_weights("mirrored", steps=1, sync_bn=False)
    trainable = trainable_indices(micro.model)
    assert len(trainable) < len(initial)
    assert max(np.abs(want[i] - initial[i]).max() for i in trainable) > 1e-3
    for i in trainable:
        np.testing.assert_allclose(got[i], want[i], rtol=0, atol=1e-6)
    np.testing.assert_allclose(micro_loss, replicas_loss, rtol=1e-6)


def test_micro_batches_compose_with_replicas_and_xla():
    # 2 replicas x 2 micro-batches (the forward and backward pass compiled) against
    # 4 micro-batches on one device (the whole step compiled, graph loop included)
    mirrored, initial, got, _ = train_weights(
        "mirrored", steps=1, sync_bn=False, jit_compile=True, micro_batches=2
    )
    single, _, want, _ = train_weights(
        "one_device", steps=1, sync_bn=False, jit_compile=True, micro_batches=4
    )
    assert (mirrored.xla, single.xla) == ("forward and backward", "step")
    trainable = trainable_indices(single.model)
    assert_same_updates(*([w[i] for i in trainable] for w in (initial, got, want)))


@pytest.mark.parametrize(
    "strategy, micro_batches, jit_compile", [("mirrored", 2, False), ("one_device", 4, True)]
)
def test_evaluation_runs_in_the_micro_batches_of_training(strategy, micro_batches, jit_compile):
    # 2 replicas x 2 micro-batches, or 4 micro-batches in a step that XLA compiles whole,
    # of a global batch of 16: each forward pass of evaluation takes 4 images, and the
    # metrics are those of the whole validation set
    loop, *_ = train_weights(
        strategy, steps=1, sync_bn=False, jit_compile=jit_compile, micro_batches=micro_batches
    )
    forward_batches = []
    logits_of = loop._logits

    def recorded(images):
        forward_batches.append(images.shape[0])
        return logits_of(images)

    loop._logits = recorded  # evaluation traces the forward pass after this
    config = make_config()
    source = load_source(config.data)
    _, val_data, _ = make_pipelines(source, config.data, 16, 0, strategy=loop.strategy)
    results = loop.evaluate(iter(val_data), val_steps(source, 16))
    assert set(forward_batches) == {4}
    images, labels, weights = validation_arrays()
    logits = loop.model.predict(images, verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    hits = np.argmax(logits, axis=-1) == labels
    want = [np.sum(loss * weights), np.sum(hits * weights)] / np.sum(weights)
    np.testing.assert_allclose([results["loss"], results["top1"]], want, rtol=1e-4)


def test_moving_average_of_the_weights_is_kept_on_each_replica_and_evaluated():
    loop, initial, final, _ = train_weights("mirrored", steps=1, ema_decay=0.999, evaluate=True)
    model = loop.model
    trainable = trainable_indices(model)
    decay = 2 / 11  # min(0.999, (1 + step) / (10 + step)) after step 1: a short run's warmup
    for average, i in zip(loop.averages, trainable):
        want = decay * initial[i] + (1 - decay) * final[i]
        for copy in average.values:  # the copy on each replica
            np.testing.assert_allclose(copy.numpy(), want, rtol=1e-6, atol=1e-7)
    # evaluation used the averages, and left the trained weights in the model
    for i in trainable:
        np.testing.assert_array_equal(model.variables[i].numpy(), final[i])
    images, labels, weights = validation_arrays()
    real = weights == 1  # 360 images and 8 blanks, which the metrics leave out
    assert real.sum() == 360 and (weights[~real] == 0).all()
    with loop.averaged_weights():
        logits = model.predict(images[real], verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(labels[real], logits, from_logits=True)
    np.testing.assert_allclose(loop.results("val")["loss"], np.mean(loss), rtol=1e-4)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_master_weights(precision):
    loop, _, _, losses = train_weights(
        "one_device", steps=12, steps_per_call=3, global_batch=32, precision=precision
    )
    model = loop.model
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert model.get_layer("conv1_conv").compute_dtype == precision.split("_")[1]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_default_recipe_trains_and_writes_the_run_folder(tmp_path, fast_digits):
    config = make_config(*fast_digits, "trainer.epochs=2")
    best = train(config, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (
        best
        == summary["best"]["val_top1"]
        == max(summary["best"]["val_top1"], summary["final"]["val_top1"])
    )
    assert summary["parameters"] == {"trainable": 271_807, "total": 273_183}
    assert summary["flops"] > 0 and summary["images_per_sec"] > 0
    assert set(summary["versions"]) == {"sectrain", "python", "tensorflow", "keras"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    columns = {
        "train_loss",
        "train_top1",
        "train_top5",
        "val_loss",
        "val_top1",
        "val_top5",
        "lr",
        "images_per_sec",
        "seconds",
    }
    assert columns <= set(rows[0])
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert model.count_params() == 273_183


def test_se_resnet50_on_cifar10_trains_from_tfds(tmp_path):
    config = make_config(
        "model=se_resnet50", "data=cifar10", "trainer.epochs=1", "trainer.global_batch_size=8"
    )
    with tfds.testing.mock_data(num_examples=16):
        train(config, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "resnet50" and summary["data"] == "cifar10"
    assert summary["image_shape"] == [32, 32, 3] and len(summary["classes"]) == 10
    assert np.isfinite(summary["final"]["train_loss"])


def test_cifar100_has_100_classes_under_mock_data(tmp_path):
    config = make_config("data=cifar100", "trainer.epochs=1", "trainer.global_batch_size=8")
    with tfds.testing.mock_data(num_examples=16):
        source = load_source(config.data)
    assert source.num_classes == 100 and source.image_shape == (32, 32, 3)


def test_jobs_of_a_sweep_each_train_under_a_mirrored_strategy_of_their_own(tmp_path):
    # Hydra's basic launcher runs a sweep's jobs one after another in one process; the
    # second job's collective ops used to collide with the first's (tensorflow#62790).
    for ratio in (16, 4):
        config = make_config(
            "trainer.strategy=mirrored",
            f"model.attention.ratio={ratio}",
            "+model.options.depths=[1,1,1]",
            "trainer.epochs=1",
            "trainer.global_batch_size=256",
        )
        train(config, tmp_path / str(ratio))
        summary = json.loads((tmp_path / str(ratio) / "summary.json").read_text())
        assert (summary["status"], summary["replicas"]) == ("completed", 2)


def test_a_job_after_a_deterministic_one_runs_without_op_determinism():
    from tensorflow.python.framework.config import is_op_determinism_enabled

    for deterministic in (True, False):  # two jobs of a sweep, in one process
        start_session(TrainerConfig(deterministic=deterministic))
        assert is_op_determinism_enabled() == deterministic


def test_global_batch_must_divide_across_replicas(tmp_path):
    config = make_config("trainer.strategy=mirrored", "trainer.global_batch_size=33")
    with pytest.raises(ConfigError, match="divisible by the 2 replicas"):
        train(config, tmp_path)
    t = make_config("trainer.global_batch_size=6", "trainer.micro_batches=2").trainer
    with pytest.raises(ConfigError, match="the 2 replicas x 2 micro-batches. Received: 6"):
        batch_parts(t, make_strategy("mirrored"))  # as sectrain-bench checks it too
    assert batch_parts(t, make_strategy("one_device")) == "1 replica x 2 micro-batches"


BAD_TASK = {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}


@pytest.mark.parametrize(
    "tf_config, message",
    [("{not json", "Expecting property name"), (json.dumps(BAD_TASK), "The `task_id` 3 exceeds")],
)
def test_a_bad_tf_config_is_a_config_error(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(
        ConfigError, match=f"trainer.strategy=multi_worker: check TF_CONFIG: {message}"
    ):
        make_strategy("multi_worker")


def test_a_slurm_job_outside_a_step_is_a_config_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    with pytest.raises(
        ConfigError, match="trainer.strategy=multi_worker: check SLURM's environment: SLURM_PROCID"
    ):
        make_strategy("multi_worker")


def test_xla_defaults_and_what_a_mirrored_strategy_refuses():
    mirrored, one_device = make_strategy("mirrored"), make_strategy("one_device")
    gpu = bool(tf.config.list_logical_devices("GPU"))
    assert use_jit(None, mirrored) == gpu
    assert use_jit(None, one_device) == gpu
    assert use_jit(None, mirrored, sync_bn=True) is False  # XLA cannot compile its all-reduce
    assert use_jit(None, one_device, sync_bn=True) == gpu
    assert use_jit(True, one_device, sync_bn=True) is True
    assert use_jit(True, mirrored) is True
    # the strategy `auto` picks is known only here, with the devices
    with pytest.raises(ConfigError, match="trainer.jit_compile: XLA cannot compile batch norm"):
        use_jit(True, mirrored, sync_bn=True)
    # an explicit mirrored strategy fails with the config, before TensorFlow is needed
    with pytest.raises(ConfigError, match="trainer.jit_compile: XLA cannot compile batch norm"):
        make_config("trainer.strategy=mirrored", "trainer.jit_compile=true", "trainer.sync_bn=true")


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=se_mobilenet_v2", "model.options.alpha=0.35"),
        ("model=se_densenet_bc", "model.options.depth=16"),
        (
            "model=se_wrn16_8",
            "model.options.depth=10",
            "model.options.width=1",
            "model/attention=eca",
            "model.attention.ratio=4",  # SE's: ECA has no reduction
        ),
        ("+model.options.depths=[1,1,1]", "+model.options.block=bottleneck"),
        ("model=se_vgg16", "+model.options.depths=[1,1,1,1,1]", "+model.options.fc_width=64"),
        ("model=se_bn_inception",),
        (
            "model=se_shake_shake26",
            "+model.options.depth=8",
            "+model.options.width=8",
            "data.augment.cutout=8",
        ),
    ],
    ids=["mobilenet_v2", "densenet_bc", "wrn_eca", "custom_resnet", "vgg", "bn_inception", "shake"],
)
def test_other_families_train_through_the_same_runner(overrides, tmp_path, caplog):
    config = make_config(*overrides, "trainer.epochs=1", "trainer.global_batch_size=256")
    train(config, tmp_path)
    unused = "model.attention.ratio=4 changes nothing: eca blocks do not take it"
    assert (unused in caplog.text) == ("model.attention.ratio=4" in overrides)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert np.isfinite(summary["final"]["train_loss"]) and summary["final"]["val_top1"] > 0
    assert summary["options"] == config.model.options
