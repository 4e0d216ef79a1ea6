"""One training run: config -> data -> model -> loop -> run folder."""

import logging
import math
import os
import platform
import shutil
import signal
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from sectrain import __version__
from sectrain.config import AttentionConfig, check_xla, run_config_yaml
from sectrain.data.pipeline import epoch_steps, make_pipelines, val_steps
from sectrain.data.sources import load_source
from sectrain.errors import EXIT_STATUS, ConfigError
from sectrain.layers.attention import unused_settings
from sectrain.loggers.console import ConsoleLogger
from sectrain.loggers.files import FileLogger, close_log_files, prepare_run_dir, write_json
from sectrain.models import build_model
from sectrain.models.profile import count_flops, count_parameters
from sectrain.training.checkpoint import restore
from sectrain.training.loop import TrainingLoop, compiles_whole_step
from sectrain.training.optim import l2_decay_rate, make_optimizer, make_schedule
from sectrain.training.stops import stop_requests
from sectrain.training.strategy import is_chief, make_strategy, worker_name
from sectrain.training.warm_start import warm_start

log = logging.getLogger("sectrain")
# Raised by TensorFlow itself when a distributed data set is iterated inside tf.function.
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")


class RunStopped(Exception):
    """Training ended before its last step. `status` ("interrupted", "diverged" or
    "out_of_memory") is also written to summary.json; `exit_code` is the status the
    command exits with; `resume_with` lists the overrides with which the run resumes
    (None: resuming as it is would stop again the same way)."""

    def __init__(self, status, message, exit_code, resume_with=None):
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code
        self.resume_with = resume_with


def out_of_memory(error, step, trainer, replicas):
    """The RunStopped for a device that ran out of memory by `step` of a run of
    `trainer`: resumed with twice the micro-batches where its batch divides into them."""
    micro_batches = 2 * trainer.micro_batches
    fits = not trainer.sync_bn and trainer.global_batch_size % (replicas * micro_batches) == 0
    change = f"trainer.micro_batches={micro_batches}"
    advice = (
        f"{change} trains the same batch in parts, in less memory"
        if fits
        else "lower trainer.global_batch_size"
    )
    lines = [line.strip() for line in str(error.message).splitlines() if line.strip()] or [""]
    # under XLA the message starts "Graph execution error:" and names the cause later
    named = [line for line in lines if line.startswith("OOM ") or "out of memory" in line.lower()]
    cause = (named or lines)[0]
    return RunStopped(
        "out_of_memory",
        f"the device ran out of memory by step {step} ({cause}); {advice}. The last "
        "checkpoint is kept",
        EXIT_STATUS["out_of_memory"],
        resume_with=[change] if fits else None,
    )


def interrupted(signum, step, epoch=None):
    """The RunStopped for a run that the signal `signum` stopped at `step`: in `epoch`,
    with a checkpoint saved, or before training (epoch None)."""
    where = f"at step {step} (epoch {epoch}); a checkpoint is saved" if epoch else "before training"
    return RunStopped(
        "interrupted",
        f"stopped by {signal.Signals(signum).name} {where}",
        128 + signum,
        resume_with=[],
    )


def train(config, run_dir, console=None):
    """Trains `config` (a validated `sectrain.config.Config`), writing into `run_dir`.

    Re-running into a run dir that holds checkpoints resumes from the last one: model,
    optimizer state, step (and so learning rate and epoch), the position in the data
    stream and the running metrics of the epoch. With several workers, only the chief
    writes the run folder; every worker resumes from the chief's checkpoints (`run_dir`
    must then be on a file system they share).

    Returns:
        The best validation top-1 accuracy, the value a Hydra sweeper optimises.

    Raises:
        ConfigError: the config cannot run with this data, these devices or this folder.
        RunStopped: SIGTERM or SIGINT (in training, after saving a checkpoint), or a
            non-finite loss.
    """
    # from the start: a signal during the setup is recorded too (see stop_requests)
    with stop_requests() as stop:
        started = time.perf_counter()
        run_dir = Path(run_dir)
        t = config.trainer
        config_yaml = run_config_yaml(config)

        strategy = start_session(t)
        chief = is_chief(strategy)
        if chief:
            prepare_run_dir(run_dir, config_yaml, t.fresh_start)
        else:  # another worker logs to its console alone
            close_log_files()
        # Every worker saves checkpoints (saving may need all of them); only the chief's stay.
        save_dir = (
            run_dir
            if chief
            else Path(tempfile.mkdtemp(prefix=f"sectrain-{worker_name(strategy)}-"))
        )
        replicas = strategy.num_replicas_in_sync
        parts = batch_parts(t, strategy)

        source = load_source(config.data)
        steps_per_epoch = epoch_steps(source, t.global_batch_size)
        val_batches = val_steps(source, t.global_batch_size)
        total_steps = t.epochs * steps_per_epoch

        attention = asdict(config.model.attention)
        unused = unused_settings(attention, asdict(AttentionConfig()))
        for key, value in unused.items():
            log.warning(
                "model.attention.%s=%s changes nothing: %s blocks do not take it",
                key,
                value,
                config.model.attention.kind,
            )
        resumed = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))  # the chief's
        # a resumed run's checkpoint holds its weights: model.init_from is for a fresh start
        model, optimizer, loop = build_trainer(
            config,
            strategy,
            source,
            steps_per_epoch,
            init_from=None if resumed else config.model.init_from,
        )

        checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            train_metrics=loop.metric_variables("train"),
            averages=loop.averages,
            # the state of dropout's random draws, which tf.train.Checkpoint does not track
            random_state=[v.value for v in model.variables if "seed_generator" in v.path],
        )
        manager = tf.train.CheckpointManager(checkpoint, save_dir / "checkpoints", max_to_keep=2)
        step = 0
        if resumed:
            restore(checkpoint, resumed)
            step = int(optimizer.iterations.numpy())
            log.info(
                "resumed from %s at step %d (epoch %d)", resumed, step, step // steps_per_epoch + 1
            )

        # The stream of training examples is a function of the seed: resuming starts it at
        # the restored step, so the run continues with the very same batches.
        train_data, val_data, (mean, std) = make_pipelines(
            source, config.data, t.global_batch_size, t.seed, step, strategy
        )
        train_iterator, val_iterator = iter(train_data), iter(val_data)

        files = FileLogger(run_dir, tensorboard=config.logger.tensorboard) if chief else None
        rows = files.restart_after(step // steps_per_epoch) if files else []
        trainable, total = count_parameters(model)
        flops = count_flops(model)
        height, width, _ = source.image_shape
        console = ConsoleLogger(
            config.logger.print_config, config.logger.progress, console, quiet=not chief
        )
        options = "".join(f" {key}={value}" for key, value in config.model.options.items())
        console.start(
            config_yaml,
            f"[bold]{model.name}[/]{options} attention={config.model.attention.kind}: "
            f"{trainable:,} trainable / {total:,} total parameters, "
            f"{flops / 1e6:,.1f} MFLOPs per {height}x{width} image; "
            f"{source.num_train:,} train / {source.num_val:,} val images, "
            f"{parts}, {t.precision}, XLA: {loop.xla}",
        )
        summary = {
            "status": "running",
            "model": config.model.name,
            "options": config.model.options,
            "attention": attention,
            "data": config.data.name,
            "classes": source.class_names,
            "epochs": t.epochs,
            "steps_per_epoch": steps_per_epoch,
            "parameters": {"trainable": trainable, "total": total},
            "flops": flops,
            "image_shape": list(source.image_shape),
            # what a user of model.keras feeds it: (image / 255 - mean) / std, per channel
            "normalization": {"mean": mean, "std": std},
            "eval_crop": config.data.eval_crop,
            "replicas": replicas,
            "strategy": type(strategy).__name__,
            "precision": t.precision,
            "xla": loop.xla,
            "versions": {
                "sectrain": __version__,
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            },
        }

        def finish(status, message=None):
            summary.update(status=status, step=step, wall_seconds=time.perf_counter() - started)
            if message:
                summary["message"] = message
            if rows:
                throughputs = [r["images_per_sec"] for r in rows]
                summary.update(
                    best=max(rows, key=lambda r: r["val_top1"]),
                    final=rows[-1],
                    # the first epoch includes tracing and compilation: leave it out if possible
                    images_per_sec=statistics.median(throughputs[1:] or throughputs),
                )
            if chief:
                write_json(run_dir / "summary.json", summary)

        stop.training = True
        try:
            if stop.signal:  # one whose KeyboardInterrupt was lost, or a SIGTERM, in the setup
                raise interrupted(stop.signal, step)
            while step < total_steps:
                epoch = step // steps_per_epoch + 1
                if step % steps_per_epoch == 0:  # else resumed mid-epoch: metrics restored
                    loop.reset("train")
                epoch_started = time.perf_counter()
                first_step = step
                with console.epoch_progress(epoch, t.epochs, steps_per_epoch) as update:
                    while step < epoch * steps_per_epoch:
                        steps = min(t.steps_per_call, epoch * steps_per_epoch - step)
                        if t.checkpoint_every_steps:  # land on each checkpoint step
                            steps = min(
                                steps, t.checkpoint_every_steps - step % t.checkpoint_every_steps
                            )
                        loop.train_steps(train_iterator, tf.constant(steps))
                        step += steps
                        metrics = loop.results("train")
                        if not math.isfinite(metrics["loss"]):
                            raise RunStopped(
                                "diverged",
                                f"the training loss became {metrics['loss']} by step {step} "
                                f"(epoch {epoch}); the last good checkpoint is kept. "
                                "Lower optimizer.lr or add schedule.warmup_epochs",
                                EXIT_STATUS["diverged"],
                            )
                        if stop.signal:
                            manager.save(checkpoint_number=step)
                            raise interrupted(stop.signal, step, epoch)
                        if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0:
                            manager.save(checkpoint_number=step)
                        elapsed = time.perf_counter() - epoch_started
                        update(
                            step - (epoch - 1) * steps_per_epoch,
                            f"loss {metrics['loss']:.4f}  top-1 {metrics['top1']:.2%}  "
                            f"lr {float(optimizer.learning_rate):.4g}  "
                            f"{(step - first_step) * t.global_batch_size / elapsed:,.0f} img/s",
                        )
                train_seconds = time.perf_counter() - epoch_started
                row = {
                    "epoch": epoch,
                    **{f"train_{k}": v for k, v in loop.results("train").items()},
                    **{f"val_{k}": v for k, v in loop.evaluate(val_iterator, val_batches).items()},
                    "lr": float(optimizer.learning_rate),
                    "images_per_sec": (step - first_step) * t.global_batch_size / train_seconds,
                    "seconds": time.perf_counter() - epoch_started,
                }
                rows.append(row)
                if files:
                    files.log_epoch(row)
                console.epoch_end(row)
                if epoch % t.checkpoint_every_epochs == 0 or step == total_steps:
                    manager.save(checkpoint_number=step)
        except tf.errors.ResourceExhaustedError as error:  # e.g. a batch too large for a GPU
            stopped = out_of_memory(error, step, t, replicas)
            finish(stopped.status, str(stopped))
            raise stopped from None
        except RunStopped as stopped:
            finish(stopped.status, str(stopped))
            raise
        finally:
            stop.training = False  # a SIGINT from here on stops at once
            if files:
                files.close()
            if not chief:
                shutil.rmtree(save_dir, ignore_errors=True)

    if chief and t.save_model:
        with loop.averaged_weights():  # the weights it was evaluated with
            _save_model(model, run_dir / "model.keras")
    finish("completed")
    best = summary.get("best", {"val_top1": 0.0, "epoch": 0})
    console.end(
        f"best val top-1 {best['val_top1']:.2%} at epoch {best['epoch']}; "
        f"{summary['wall_seconds']:.0f} s. Run folder: {run_dir}"
    )
    return best["val_top1"]


def start_session(trainer):
    """Sets up TensorFlow for a run of `trainer` (a `TrainerConfig`): a fresh Keras
    session, determinism, seed and precision. Returns the tf.distribute strategy."""
    keras.backend.clear_session()  # sweeps run several jobs in one process
    if trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # after a deterministic job of the sweep; TensorFlow's way back is private
        tf_config.disable_op_determinism()
    strategy = make_strategy(trainer.strategy)  # multi-worker: before any other TensorFlow op
    keras.utils.set_random_seed(trainer.seed)
    keras.mixed_precision.set_dtype_policy(trainer.precision)
    return strategy


def batch_parts(trainer, strategy):
    """What each step's global batch is split into under `strategy`, in words: "1
    replica", "2 replicas", or "2 replicas x 4 micro-batches".

    Raises:
        ConfigError: `trainer.global_batch_size` does not divide into them.
    """
    replicas = strategy.num_replicas_in_sync
    parts = "1 replica" if replicas == 1 else f"{replicas} replicas"
    if trainer.micro_batches > 1:
        parts += f" x {trainer.micro_batches} micro-batches"
    if trainer.global_batch_size % (replicas * trainer.micro_batches):
        raise ConfigError(
            f"trainer.global_batch_size: must be divisible by the {parts}. "
            f"Received: {trainer.global_batch_size}"
        )
    return parts


def build_trainer(config, strategy, source, steps_per_epoch, init_from=None):
    """The model, its optimizer (with the learning-rate schedule) and the training loop
    that `config` describes for `source`'s images, built in `strategy`'s scope; the
    model starts from the weights of the trained model in `init_from`, if given (see
    `sectrain.training.warm_start`)."""
    t = config.trainer
    with strategy.scope():
        model = build_model(
            config.model.name,
            num_classes=source.num_classes,
            input_shape=source.image_shape,
            attention=asdict(config.model.attention),
            sync_bn=t.sync_bn,
            dropout=config.model.dropout,
            **config.model.options,
        )
        peak_lr = config.optimizer.lr
        if config.optimizer.scale_lr_with_batch:  # linear scaling (Goyal et al. 2017)
            peak_lr *= t.global_batch_size / config.optimizer.base_batch_size
        schedule = make_schedule(config.schedule, peak_lr, steps_per_epoch, t.epochs)
        optimizer = make_optimizer(config.optimizer, schedule, t.precision)
        optimizer.build(model.trainable_variables)
    if init_from:  # before the loop, whose moving averages start from the weights
        warm_start(model, init_from)
    loop = TrainingLoop(
        strategy,
        model,
        optimizer,
        t.global_batch_size,
        l2_decay_rate(config.optimizer),
        jit_compile=use_jit(t.jit_compile, strategy, t.sync_bn),
        label_smoothing=t.label_smoothing,
        micro_batches=t.micro_batches,
        ema_decay=t.ema_decay,
    )
    return model, optimizer, loop


def use_jit(jit_compile, strategy, sync_bn=False):
    """trainer.jit_compile under `strategy`: null means XLA with a GPU and none on a CPU
    (where it was slower).

    Under a mirrored strategy XLA compiles the forward and backward pass only (see
    `compiles_whole_step`), which on one H100 trained SE-ResNet-50 3.5 times as fast as
    without; by default it stays off there with synchronised batch norm, which XLA cannot
    compile (asked for, that is an error: see `check_xla`).
    """
    mirrored = not compiles_whole_step(strategy)
    if jit_compile is None:
        return bool(tf.config.list_logical_devices("GPU")) and not (mirrored and sync_bn)
    check_xla(jit_compile, sync_bn, mirrored=mirrored)
    return jit_compile


def _save_model(model, path):
    """Saves a .keras file atomically (Keras needs the suffix, hence the name)."""
    partial = path.with_name("partial." + path.name)
    model.save(partial)
    os.replace(partial, path)
