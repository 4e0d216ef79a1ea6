"""One training run: config -> data -> model -> loop -> run folder."""

import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import keras
import tensorflow as tf

from sectrain.data.pipeline import make_pipelines
from sectrain.data.sources import load_source
from sectrain.errors import ConfigError
from sectrain.loggers.console import ConsoleLogger
from sectrain.loggers.files import FileLogger, write_json
from sectrain.models import build_model
from sectrain.models.profile import count_flops, count_parameters
from sectrain.training.loop import TrainingLoop
from sectrain.training.optim import l2_decay_rate, make_optimizer, make_schedule
from sectrain.training.strategy import is_chief, make_strategy, worker_name

log = logging.getLogger("sectrain")
# Raised by TensorFlow itself when a distributed data set is iterated inside tf.function.
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")


def train(config, run_dir, resolved_yaml="", console=None):
    """Trains `config` (a validated `sectrain.config.Config`), writing into `run_dir`.

    Re-running into a run dir that holds checkpoints resumes from the last one. With
    several workers, only the chief writes the run folder; every worker resumes from the
    chief's checkpoints (`run_dir` must then be on a file system they share).

    Returns:
        The best validation top-1 accuracy, the value a Hydra sweeper optimises.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    t = config.trainer

    keras.backend.clear_session()  # sweeps run several jobs in one process
    strategy = make_strategy(t.strategy)  # multi-worker: before any other TensorFlow op
    keras.utils.set_random_seed(t.seed)
    keras.mixed_precision.set_dtype_policy(t.precision)
    chief = is_chief(strategy)
    # Every worker saves checkpoints (saving may need all of them); only the chief's stay.
    save_dir = (
        run_dir if chief else Path(tempfile.mkdtemp(prefix=f"sectrain-{worker_name(strategy)}-"))
    )
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(resolved_yaml)
    replicas = strategy.num_replicas_in_sync
    if t.global_batch_size % replicas:
        raise ConfigError(
            f"trainer.global_batch_size: must be divisible by the {replicas} replicas. "
            f"Received: {t.global_batch_size}"
        )

    source = load_source(config.data)
    steps_per_epoch = source.num_train // t.global_batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"trainer.global_batch_size: larger than the {source.num_train} training "
            f"images. Received: {t.global_batch_size}"
        )
    train_data, val_data, (mean, std) = make_pipelines(
        source, config.data, t.global_batch_size, t.seed
    )
    train_iterator = iter(strategy.experimental_distribute_dataset(train_data))
    val_data = strategy.experimental_distribute_dataset(val_data)

    attention = asdict(config.model.attention)
    with strategy.scope():
        model = build_model(
            config.model.name,
            num_classes=source.num_classes,
            input_shape=source.image_shape,
            attention=attention,
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
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    jit = bool(tf.config.list_logical_devices("GPU")) if t.jit_compile is None else t.jit_compile
    loop = TrainingLoop(
        strategy, model, optimizer, t.global_batch_size, l2_decay_rate(config.optimizer), jit
    )

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, save_dir / "checkpoints", max_to_keep=2)
    latest = tf.train.latest_checkpoint(run_dir / "checkpoints")  # the chief's
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("resumed from %s at epoch %d", latest, int(epoch_var.numpy()))
    files = FileLogger(run_dir, tensorboard=config.logger.tensorboard) if chief else None

    trainable, total = count_parameters(model)
    flops = count_flops(model)
    height, width, _ = source.image_shape
    console = ConsoleLogger(
        config.logger.print_config, config.logger.progress, console, quiet=not chief
    )
    console.start(
        resolved_yaml,
        f"[bold]{model.name}[/] attention={config.model.attention.kind}: "
        f"{trainable:,} trainable / {total:,} total parameters, "
        f"{flops / 1e6:,.1f} MFLOPs per {height}x{width} image; "
        f"{source.num_train:,} train / {source.num_val:,} val images, "
        f"{replicas} replica(s), {t.precision}",
    )

    rows = files.restart_after(int(epoch_var.numpy())) if files else []
    for epoch in range(int(epoch_var.numpy()) + 1, t.epochs + 1):
        epoch_started = time.perf_counter()
        train_metrics, images_per_sec = _train_epoch(
            loop, train_iterator, steps_per_epoch, t, epoch, console
        )
        row = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"val_{k}": v for k, v in loop.evaluate(val_data).items()},
            "lr": float(optimizer.learning_rate),
            "images_per_sec": images_per_sec,
            "seconds": time.perf_counter() - epoch_started,
        }
        rows.append(row)
        if files:
            files.log_epoch(row)
        console.epoch_end(row)
        epoch_var.assign(epoch)
        manager.save(checkpoint_number=epoch)
    if not chief:
        shutil.rmtree(save_dir, ignore_errors=True)
        return max(r["val_top1"] for r in rows) if rows else 0.0
    files.close()

    if t.save_model:
        _save_model(model, run_dir / "model.keras")
    best = max(rows, key=lambda r: r["val_top1"])
    throughputs = [r["images_per_sec"] for r in rows]
    summary = {
        "status": "completed",
        "model": config.model.name,
        "attention": attention,
        "data": config.data.name,
        "classes": source.class_names,
        "epochs": t.epochs,
        "parameters": {"trainable": trainable, "total": total},
        "flops": flops,
        "image_shape": list(source.image_shape),
        # what a user of model.keras feeds it: (image / 255 - mean) / std, per channel
        "normalization": {"mean": mean, "std": std},
        "replicas": replicas,
        "strategy": type(strategy).__name__,
        "precision": t.precision,
        "best": best,
        "final": rows[-1],
        # the first epoch includes tracing and compilation: leave it out when there are more
        "images_per_sec": statistics.median(throughputs[1:] or throughputs),
        "wall_seconds": time.perf_counter() - started,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }
    write_json(run_dir / "summary.json", summary)
    console.end(
        f"best val top-1 {best['val_top1']:.2%} at epoch {best['epoch']}; "
        f"final {rows[-1]['val_top1']:.2%}; {summary['wall_seconds']:.0f} s. Run folder: {run_dir}"
    )
    return best["val_top1"]


def _train_epoch(loop, iterator, steps_per_epoch, trainer, epoch, console):
    """Trains one epoch; returns its train metrics and images per second."""
    loop.reset("train")
    started = time.perf_counter()
    done = 0
    with console.epoch_progress(epoch, trainer.epochs, steps_per_epoch) as update:
        while done < steps_per_epoch:
            steps = min(trainer.steps_per_call, steps_per_epoch - done)
            loop.train_steps(iterator, tf.constant(steps))
            done += steps
            metrics = loop.results("train")
            rate = done * trainer.global_batch_size / (time.perf_counter() - started)
            update(
                done,
                f"loss {metrics['loss']:.4f}  top-1 {metrics['top1']:.2%}  "
                f"lr {float(loop.optimizer.learning_rate):.4g}  {rate:,.0f} img/s",
            )
    images_per_sec = done * trainer.global_batch_size / (time.perf_counter() - started)
    return loop.results("train"), images_per_sec


def _save_model(model, path):
    """Saves a .keras file atomically (Keras needs the suffix, hence the name)."""
    partial = path.with_name("partial." + path.name)
    model.save(partial)
    os.replace(partial, path)
