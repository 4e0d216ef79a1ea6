"""Measures benchmark variants in processes of their own:

    python -m sectrain.benchmark.measure KIND RESULT.json CONFIG.yaml [CONFIG.yaml ...]

KIND is one of
- `speed`: training and inference speed of sectrain's model and loop for every CONFIG,
  all in one process with their timed calls taken in turns, so that a ratio between
  variants is not skewed by the differences between processes (on a busy machine, up to
  20%, more than the effects measured);
- `resources`: one CONFIG's peak memory, its training on the configured input pipeline
  and the input pipeline alone, in a process of its own so that the peak is its own;
- `keras_fit`: one CONFIG's keras.applications counterpart, compiled and trained with
  `model.fit`.
"""

import dataclasses
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
from sectrain.cli import fail
from sectrain.config import validate
from sectrain.data.pipeline import make_pipelines
from sectrain.data.sources import load_source
from sectrain.errors import ConfigError
from sectrain.inference.fold import fold_for_inference
from sectrain.models.profile import count_parameters
from sectrain.train import batch_parts, build_trainer, start_session, use_jit
from sectrain.training.loop import compiles_whole_step


def rate_stats(images, seconds):
    """Images/s of each timed call: the median and the 25th-75th percentile spread."""
    rates = [images / s for s in seconds]
    low, high = np.percentile(rates, [25, 75])
    return {"median": statistics.median(rates), "p25": float(low), "p75": float(high)}


def timed_in_turns(calls):
    """Seconds of each call of each `(call, count)` pair: `count` calls of `call` (which
    returns once its work is done), taken in turns with the other pairs' calls, every other
    turn in reverse order, so that a drift of the machine reaches every pair alike."""
    seconds = [[] for _ in calls]
    for turn in range(max(count for _, count in calls)):
        order = list(enumerate(calls))
        for index, (call, count) in order if turn % 2 == 0 else reversed(order):
            if turn < count:
                started = time.perf_counter()
                call()
                seconds[index].append(time.perf_counter() - started)
    return seconds


def timed(call, count):
    return timed_in_turns([(call, count)])[0]


def calls_for(steps, trainer):
    """How many calls of `trainer.steps_per_call` steps make `steps` (at least one)."""
    return max(1, steps // trainer.steps_per_call)


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


class Trainee:
    """One variant's model and training loop, with what its timed calls need: a training
    call on a synthetic batch kept on the device, and inference at a given batch."""

    def __init__(self, config, strategy, source):
        self.config, self.source = config, source
        t = config.trainer
        batch_parts(t, strategy)  # the global batch divides among replicas and micro-batches
        self.model, _, self.loop = build_trainer(config, strategy, source, steps_per_epoch=1000)
        self.device_batch = DeviceBatch(
            strategy, t.global_batch_size, source.image_shape, source.num_classes
        )
        self.steps_per_call = tf.constant(t.steps_per_call)
        jit = use_jit(t.jit_compile, strategy, t.sync_bn)
        folded = fold_for_inference(self.model)  # as sectrain's inference runs on a CPU
        self.predict = {
            fold: tf.function(lambda x, m=model: m(x, training=False), jit_compile=jit)
            for fold, model in ((True, folded), (False, self.model))
        }

    def train_call(self, iterator=None):
        """Returns a call that trains steps_per_call steps and waits for them."""

        def call():
            self.loop.train_steps(iterator or self.device_batch, self.steps_per_call)
            self.loop.results("train")

        return call

    def predict_call(self, batch, fold=True):
        """Returns a call that infers `batch` images, with SE folded (as sectrain's
        inference runs on a CPU) or as the model was built (as it runs with a GPU)."""
        images = tf.random.normal([batch, *self.source.image_shape])
        return lambda: self.predict[fold](images).numpy()

    def train_rate(self, seconds):
        t = self.config.trainer
        return rate_stats(t.steps_per_call * t.global_batch_size, seconds)


def measure_speed(configs, sources):
    """Training images/s on a synthetic batch, latency at batch 1 (with SE folded and
    as built) and inference images/s of every config, their timed calls taken in turns.
    The configs share the settings of `start_session` (the benchmark's command groups
    them so)."""
    bench = configs[0].bench
    strategy = start_session(configs[0].trainer)
    trainees = [Trainee(c, strategy, s) for c, s in zip(configs, sources)]
    for trainee in trainees:  # tracing and compilation
        timed(trainee.train_call(), calls_for(bench.warmup_steps, trainee.config.trainer))
        for batch, fold in ((1, True), (1, False), (bench.inference_batch, True)):
            timed(trainee.predict_call(batch, fold), 2)
    train = timed_in_turns(
        [
            (trainee.train_call(), calls_for(bench.timed_steps, trainee.config.trainer))
            for trainee in trainees
        ]
    )
    calls = bench.inference_calls
    latency = timed_in_turns(
        [(t.predict_call(1, fold), calls) for fold in (True, False) for t in trainees]
    )
    throughput = timed_in_turns([(t.predict_call(bench.inference_batch), calls) for t in trainees])
    return [
        {
            "train_synthetic": trainee.train_rate(train[i]),
            "latency_ms": 1000 * statistics.median(latency[i]),
            "latency_unfolded_ms": 1000 * statistics.median(latency[len(trainees) + i]),
            "inference": rate_stats(bench.inference_batch, throughput[i]),
            "parameters": count_parameters(trainee.model)[0],
        }
        for i, trainee in enumerate(trainees)
    ]


def measure_resources(config, source):
    """Peak memory of training on the synthetic batch, then training on the configured
    input pipeline and the pipeline alone."""
    bench, t = config.bench, config.trainer
    strategy = start_session(t)
    reset_gpu_peak()
    trainee = Trainee(config, strategy, source)
    timed(trainee.train_call(), calls_for(bench.warmup_steps + bench.timed_steps, t))
    result = {}
    result["peak_host_mib"], result["peak_gpu_mib"] = peak_memory()

    # a training set smaller than the batch (a few synthetic images) repeats within an epoch
    passes = -(-t.global_batch_size // source.num_train)
    source = dataclasses.replace(
        source, train=source.train.repeat(passes), num_train=passes * source.num_train
    )
    train_data, *_ = make_pipelines(source, config.data, t.global_batch_size, t.seed)
    if bench.real_data:
        iterator = iter(strategy.experimental_distribute_dataset(train_data))
        call = trainee.train_call(iterator)
        timed(call, calls_for(bench.warmup_steps, t))
        result["train_real"] = trainee.train_rate(timed(call, calls_for(bench.timed_steps, t)))
        del iterator, call  # stops its prefetching before the pipeline is timed alone

    if bench.pipeline_batches:  # the input pipeline alone, on the host
        batches = iter(train_data)
        next(batches)  # start-up: shuffle buffer, first decode
        result["pipeline"] = rate_stats(
            t.global_batch_size, timed(lambda: next(batches), bench.pipeline_batches)
        )
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
            # fit compiles the whole step, which a mirrored strategy does not allow
            jit_compile=use_jit(t.jit_compile, strategy) and compiles_whole_step(strategy),
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
    calls = calls_for(bench.timed_steps, t)
    warmup = calls_for(bench.warmup_steps, t)
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
    kind, result_path, *config_paths = argv or sys.argv[1:]
    configs = [validate(OmegaConf.load(path)) for path in config_paths]
    loaded, sources = {}, []  # a data config that several variants share is loaded once
    for config in configs:
        key = OmegaConf.to_yaml(config.data)
        if key not in loaded:
            loaded[key] = load_source(config.data)
        sources.append(loaded[key])
    if kind == "speed":
        results = measure_speed(configs, sources)
    elif kind == "resources":
        results = [measure_resources(configs[0], sources[0])]
    else:
        results = [measure_keras_fit(configs[0], sources[0])]
    devices = [d.name for d in tf.config.list_logical_devices() if d.device_type != "CPU"]
    with open(result_path, "w") as f:
        json.dump([{**result, "devices": devices} for result in results], f, indent=2)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as error:  # one line for sectrain-bench to show, not a traceback
        fail(error)
