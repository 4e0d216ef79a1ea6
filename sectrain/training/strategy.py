"""Picks the tf.distribute strategy for the devices (and machines) there are."""

import os

import tensorflow as tf

from sectrain.errors import ConfigError

COLLECTIVE_KEYS_PER_STRATEGY = 1000  # group keys a strategy may use: one per device set


def make_strategy(name):
    """Returns a tf.distribute strategy.

    Args:
        name: "auto" (MirroredStrategy over all GPUs if there are several, else one
            device), "default" (TensorFlow's default placement), "one_device" (the first
            GPU, else the CPU), "mirrored" (all GPUs; without GPUs, all logical CPUs),
            "multi_worker" (MultiWorkerMirroredStrategy over the machines named by
            TF_CONFIG, or by SLURM's environment inside a SLURM job) or "tpu"
            (TPUStrategy on the TPU named by TPU_NAME, or the local one).
    """
    if name in ("multi_worker", "tpu"):
        # a bad TF_CONFIG, a SLURM job outside a step, no TPU: say what to check
        try:
            return _cluster_strategy(name)
        except (ValueError, OSError, RuntimeError, tf.errors.OpError) as error:
            where = _cluster_source(name)
            raise ConfigError(f"trainer.strategy={name}: check {where}: {error}") from None
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    # Each MirroredStrategy numbers its collective ops from the same start, and TensorFlow
    # keeps the shapes of those already run: without a base of its own, the next strategy
    # in this process (the next job of a sweep) fails with "Shape mismatch in the
    # collective instance 100" (tensorflow#62790). The base is private; TensorFlow's own
    # tests set it the same way.
    tf.distribute.MirroredStrategy._collective_key_base += COLLECTIVE_KEYS_PER_STRATEGY
    return tf.distribute.MirroredStrategy(devices)


def _cluster_source(name):
    """What names the cluster of a cluster strategy: TF_CONFIG, else SLURM's environment
    inside a SLURM job, for multi_worker; TPU_NAME for tpu."""
    if name == "tpu":
        return "TPU_NAME"
    if "TF_CONFIG" not in os.environ and "SLURM_JOB_ID" in os.environ:
        return "SLURM's environment"
    return "TF_CONFIG"


def _cluster_strategy(name):
    if name == "multi_worker":
        slurm = _cluster_source(name) != "TF_CONFIG"
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver() if slurm else None
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """Whether this process writes the run's files: the chief, or worker 0 when the
    cluster has no chief, or the only process of a one-machine strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_name(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}{resolver.task_id}"
