"""Picks the tf.distribute strategy for the devices there are."""

import tensorflow as tf


def make_strategy(name):
    """Returns a tf.distribute strategy.

    Args:
        name: "auto" (MirroredStrategy over all GPUs if there are several, else one
            device), "default" (TensorFlow's default placement), "one_device" (the first
            GPU, else the CPU) or "mirrored" (all GPUs; without GPUs, all logical CPUs).
    """
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
