"""Helpers shared by tests and by the processes that tests start."""

import keras
import numpy as np
import tensorflow as tf
from hydra import compose, initialize_config_dir

from sectrain.cli import CONFIG_DIR
from sectrain.config import validate
from sectrain.data.pipeline import make_pipelines, val_steps
from sectrain.data.sources import load_source
from sectrain.models import build_model
from sectrain.training.loop import TrainingLoop
from sectrain.training.strategy import make_strategy

SE = {"kind": "se", "ratio": 4}
# The default SE-ResNet at one unit per stage (ResNet-8): the same parts at a third of the
# cost, for runs whose network is incidental to what a test checks
RESNET8 = "+model.options.depths=[1,1,1]"


def split_cpu(count):
    """Makes TensorFlow see `count` logical CPU devices (before it starts), so that a
    MirroredStrategy has `count` real replicas on a CPU-only machine."""
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )


def compose_config(*overrides, config_name="config"):
    """The config `sectrain OVERRIDES...` would run (`sectrain-bench` with
    config_name="bench"), without the `hydra` node."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def make_config(*overrides, config_name="config"):
    """A validated `Config`, quiet on the console, for in-process training."""
    quiet = ("logger.print_config=false", "logger.progress=false")
    return validate(compose_config(*quiet, *overrides, config_name=config_name))


def validation_arrays(global_batch=16):
    """The digits validation set as `train_weights` evaluates it, in one process: arrays
    of the images, labels and weights of its padded batches (see `val_pipeline`)."""
    config = make_config()
    source = load_source(config.data)
    _, val, _ = make_pipelines(source, config.data, global_batch, 0)
    one_pass = val.take(val_steps(source, global_batch))
    return [np.concatenate(parts) for parts in zip(*one_pass.as_numpy_iterator())]


def train_weights(
    strategy_name,
    steps,
    steps_per_call=1,
    global_batch=16,
    precision="float32",
    sync_bn=True,
    jit_compile=False,
    evaluate=False,
    micro_batches=1,
    ema_decay=0.0,
):
    """Trains a small SE-ResNet (ResNet-8) on fixed digits batches from a seeded
    initialisation, then, if `evaluate`, evaluates it on the validation split
    (`loop.results("val")`).

    Returns the training loop (with its strategy and model), the model's initial and
    final variables (arrays), and the mean training loss of each call.
    """
    strategy = make_strategy(strategy_name)  # multi-worker: before any other TensorFlow op
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    config = make_config("data.augment.pad_crop=0")
    source = load_source(config.data)
    data, val_data, _ = make_pipelines(source, config.data, global_batch, 0, strategy=strategy)
    with strategy.scope():
        model = build_model(
            "cifar_resnet20",
            num_classes=10,
            input_shape=source.image_shape,
            attention=SE,
            sync_bn=sync_bn,
            depths=[1, 1, 1],  # RESNET8
        )
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        optimizer.build(model.trainable_variables)
    initial = [v.numpy() for v in model.variables]
    loop = TrainingLoop(
        strategy,
        model,
        optimizer,
        global_batch,
        l2_rate=1e-4,
        jit_compile=jit_compile,
        micro_batches=micro_batches,
        ema_decay=ema_decay,
    )
    iterator = iter(data)
    losses = []
    for _ in range(steps // steps_per_call):
        loop.reset("train")
        loop.train_steps(iterator, tf.constant(steps_per_call))
        losses.append(loop.results("train")["loss"])
    if evaluate:
        loop.evaluate(iter(val_data), val_steps(source, global_batch))
    keras.mixed_precision.set_dtype_policy("float32")
    return loop, initial, [v.numpy() for v in model.variables], losses
