"""Shared fixtures. TensorFlow sees two logical CPU devices here, so that tests can run a
real two-replica MirroredStrategy on a CPU-only machine; strategies other than
`mirrored` use one device and are unaffected."""

import pytest
from hydra import compose, initialize_config_dir

from sectrain.cli import CONFIG_DIR
from sectrain.config import validate


def pytest_configure(config):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def compose_config(*overrides):
    """The config `sectrain OVERRIDES...` would run, without the `hydra` node."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def make_config(*overrides):
    """A validated `Config`, quiet on the console, for in-process training."""
    return validate(
        compose_config("logger.print_config=false", "logger.progress=false", *overrides)
    )


@pytest.fixture
def fast_digits():
    """Overrides for a seconds-long real training run on the embedded digits."""
    return ("trainer.epochs=1", "trainer.global_batch_size=128", "model=se_resnet20")
