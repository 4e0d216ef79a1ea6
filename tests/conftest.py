"""Shared fixtures. TensorFlow sees two logical CPU devices here, so that tests can run a
real two-replica MirroredStrategy on a CPU-only machine; strategies other than
`mirrored` use one device and are unaffected."""

import pytest


def pytest_configure(config):
    from tests.helpers import split_cpu

    split_cpu(2)


@pytest.fixture
def fast_digits():
    """Overrides for a seconds-long real training run on the embedded digits."""
    return ("trainer.epochs=1", "trainer.global_batch_size=128", "model=se_resnet20")
