"""Measures one benchmark variant in a process of its own, so that its peak memory is
its own: `python -m sectrain.benchmark.measure CONFIG.yaml RUNNER RESULT.json`.

RUNNER is `sectrain` (sectrain's model and training loop) or `keras_fit` (the model's
keras.applications counterpart, compiled and trained with `model.fit`).
"""

import json
import resource
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from sectrain.benchmark.cli import KERAS_APPLICATIONS
from sectrain.config import validate
from sectrain.data.pipeline import make_pipelines
from sectrain.data.sources import load_source
from sectrain.models.profile import count_parameters
from sectrain.train import build_trainer, start_session, use_jit


def rate_stats(images, seconds):
    """Images/s of each timed call: the median and the 25th-75th percentile spread."""
    rates = [images / s for s in seconds]
    low, high = np.percentile(rates, [25, 75])
    return {"median": statistics.median(rates), "p25": float(low), "p75": float(high)}


def timed(call, calls):
    """Seconds of each of `calls` calls of `call` (which returns once its work is done)."""
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def peak_memory():
    """Peak resident memory of this process so far, and the GPU's peak since the last
    reset, in MiB (None without a GPU)."""
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    gpu = None
    if tf.config.list_logical_devices("GPU"):
        gpu = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return host, gpu


def reset_gpu_peak():
    if tf.config.list_logical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


class DeviceBatch:
    """One synthetic batch, created on each replica's device, returned by every `next`:
    training on it measures the model and the loop, not the input pipeline."""

    def __init__(self, strategy, global_batch, image_shape, num_classes):
        def per_replica(context):
            size = global_batch // context.num_replicas_in_sync
            images = tf.random.normal([size, *image_shape])
            labels = tf.random.uniform([size], 0, num_classes, tf.int32)
            return images, labels

        self.batch = strategy.experimental_distribute_values_from_function(per_replica)

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def train_rate(loop, iterator, bench, steps_per_call, global_batch):
    """Warms up, then times training calls; returns the images/s statistics."""
    per_call = tf.constant(steps_per_call)
    calls = max(1, bench.timed_steps // steps_per_call)

    def call():
        loop.train_steps(iterator, per_call)
        loop.results("train")  # waits for the step to finish

    timed(call, max(1, bench.warmup_steps // steps_per_call))
    return rate_stats(steps_per_call * global_batch, timed(call, calls))


def measure_sectrain(config, source):
    bench, t = config.bench, config.trainer
    strategy = start_session(t)
    model, _, loop = build_trainer(config, strategy, source, steps_per_epoch=1000)
    result = {}
    reset_gpu_peak()
    device_batch = DeviceBatch(
        strategy, t.global_batch_size, source.image_shape, source.num_classes
    )
    result["train_synthetic"] = train_rate(
        loop, device_batch, bench, t.steps_per_call, t.global_batch_size
    )
    result["peak_host_mib"], result["peak_gpu_mib"] = peak_memory()

    # inference before any input pipeline runs: its background threads would compete
    predict = tf.function(lambda x: model(x, training=False), jit_compile=use_jit(t.jit_compile))
    for batch, key in ((1, "latency_ms"), (bench.inference_batch, "inference")):
        images = tf.random.normal([batch, *source.image_shape])
        timed(lambda images=images: predict(images).numpy(), 2)
        seconds = timed(lambda images=images: predict(images).numpy(), bench.inference_calls)
        if key == "latency_ms":
            result[key] = 1000 * statistics.median(seconds)
        else:
            result[key] = rate_stats(batch, seconds)

    train_data, *_ = make_pipelines(source, config.data, t.global_batch_size, t.seed)
    if bench.real_data:
        iterator = iter(strategy.experimental_distribute_dataset(train_data))
        result["train_real"] = train_rate(
            loop, iterator, bench, t.steps_per_call, t.global_batch_size
        )
        del iterator  # stops its prefetching before the pipeline is timed alone

    if bench.pipeline_batches:  # the input pipeline alone, on the host
        batches = iter(train_data)
        next(batches)  # start-up: shuffle buffer, first decode
        result["pipeline"] = rate_stats(
            t.global_batch_size, timed(lambda: next(batches), bench.pipeline_batches)
        )

    result["parameters"] = count_parameters(model)[0]
    return result


def measure_keras_fit(config, source):
    """keras.applications' counterpart of the model, trained by `model.fit` on one
    repeated synthetic batch with the same batch, image size, precision and XLA."""
    bench, t = config.bench, config.trainer
    strategy = start_session(t)
    with strategy.scope():
        model = getattr(keras.applications, KERAS_APPLICATIONS[config.model.name])(
            weights=None,
            input_shape=source.image_shape,
            classes=source.num_classes,
            classifier_activation=None,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(config.optimizer.lr, momentum=config.optimizer.momentum),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=use_jit(t.jit_compile),
            steps_per_execution=t.steps_per_call,
        )
    images = tf.random.normal([t.global_batch_size, *source.image_shape])
    labels = tf.random.uniform([t.global_batch_size], 0, source.num_classes, tf.int32)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step to finish
            self.ends.append(time.perf_counter())

    timer = Timer()
    calls = max(1, bench.timed_steps // t.steps_per_call)
    warmup = max(1, bench.warmup_steps // t.steps_per_call)
    reset_gpu_peak()
    model.fit(
        data,
        epochs=1,
        steps_per_epoch=(warmup + calls) * t.steps_per_call,
        callbacks=[timer],
        verbose=0,
    )
    seconds = np.diff(timer.ends[warmup - 1 :])
    result = {"train_synthetic": rate_stats(t.steps_per_call * t.global_batch_size, seconds)}
    result["peak_host_mib"], result["peak_gpu_mib"] = peak_memory()
    result["parameters"] = count_parameters(model)[0]
    return result


def main(argv=None):
    config_path, runner, result_path = argv or sys.argv[1:]
    config = validate(OmegaConf.load(config_path))
    source = load_source(config.data)
    measure = measure_keras_fit if runner == "keras_fit" else measure_sectrain
    result = measure(config, source)
    result["devices"] = [d.name for d in tf.config.list_logical_devices() if d.device_type != "CPU"]
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
