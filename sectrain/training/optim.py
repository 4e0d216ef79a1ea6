"""Optimizers and learning-rate schedules, built from the config."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sectrain")
class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate as a function of the global step: linear warmup from 0 to `peak_lr`
    over `warmup_steps`, then constant, stepped (times `gamma` at each of `boundaries`)
    or cosine (down to `min_lr_ratio * peak_lr` at `total_steps`).

    Being a function of the step alone, it resumes exactly from a restored step.
    """

    def __init__(
        self,
        kind,
        peak_lr,
        total_steps,
        warmup_steps=0,
        boundaries=(),
        gamma=0.1,
        min_lr_ratio=0.0,
    ):
        self.kind = kind
        self.peak_lr = peak_lr
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.boundaries = list(boundaries)
        self.gamma = gamma
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            lr = self.peak_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
        else:
            passed = sum(ops.cast(step >= b, "float32") for b in self.boundaries)
            lr = self.peak_lr * ops.power(self.gamma, passed)
        if self.warmup_steps:
            lr = ops.where(step < self.warmup_steps, self.peak_lr * step / self.warmup_steps, lr)
        return ops.cast(lr, "float32")

    def get_config(self):
        return {
            "kind": self.kind,
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "boundaries": self.boundaries,
            "gamma": self.gamma,
            "min_lr_ratio": self.min_lr_ratio,
        }


def make_schedule(schedule, peak_lr, steps_per_epoch, epochs):
    """Turns a `ScheduleConfig` (in epochs) into an `EpochSchedule` (in steps)."""
    if schedule.name == "step":
        epochs_at = range(schedule.step_size, epochs, schedule.step_size)
    elif schedule.name == "multistep":
        epochs_at = schedule.milestones
    else:
        epochs_at = ()
    return EpochSchedule(
        kind="cosine" if schedule.name == "cosine" else "step",
        peak_lr=peak_lr,
        total_steps=steps_per_epoch * epochs,
        warmup_steps=round(schedule.warmup_epochs * steps_per_epoch),
        boundaries=[e * steps_per_epoch for e in epochs_at],
        gamma=schedule.gamma,
        min_lr_ratio=schedule.min_lr_ratio,
    )


def make_optimizer(optimizer, learning_rate, precision):
    """Builds the optimizer of an `OptimizerConfig`, loss-scaled under mixed_float16.

    Weight decay of sgd and adam is an L2 term in the loss (see `l2_penalty`); adamw
    decays the same kernels in the update, skipping biases and batch-norm parameters.
    """
    if optimizer.name == "sgd":
        built = keras.optimizers.SGD(
            learning_rate, momentum=optimizer.momentum, nesterov=optimizer.nesterov
        )
    else:
        adam_args = dict(
            beta_1=optimizer.beta_1, beta_2=optimizer.beta_2, epsilon=optimizer.epsilon
        )
        if optimizer.name == "adam":
            built = keras.optimizers.Adam(learning_rate, **adam_args)
        else:
            built = keras.optimizers.AdamW(
                learning_rate, weight_decay=optimizer.weight_decay, **adam_args
            )
            built.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if precision == "mixed_float16":
        built = keras.optimizers.LossScaleOptimizer(built)
    return built


def l2_decay_rate(optimizer):
    """The coefficient of the L2 term in the loss: 0 where the optimizer decays itself."""
    return 0.0 if optimizer.name == "adamw" else optimizer.weight_decay


def l2_penalty(model, rate):
    """0.5 * rate * sum of squared conv and dense kernels (the paper's weight decay)."""
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    return rate * ops.sum(
        ops.stack([0.5 * ops.sum(ops.square(ops.cast(k, "float32"))) for k in kernels])
    )
