"""Checkpoints and stop requests: what lets a run resume exactly after any stop."""

import signal
from contextlib import contextmanager
from dataclasses import dataclass

import tensorflow as tf

from sectrain.errors import ConfigError


def restore(checkpoint, latest):
    """Restores `checkpoint` from the path `latest` (what `tf.train.latest_checkpoint`
    names: TensorFlow writes a checkpoint's files first and names it in the folder's index
    last, so a save cut short leaves the one before as the newest).

    Raises:
        ConfigError: the files are damaged or hold another model.
    """
    try:
        checkpoint.restore(latest).assert_existing_objects_matched()
    # TensorFlow reports a damaged file in several ways (a truncated one: IndexError)
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise ConfigError(
            f"checkpoint {latest} cannot be restored ({first_line}). Delete its files to "
            "resume from the one before, or set trainer.fresh_start=true to start anew"
        ) from None


@dataclass
class StopRequest:
    """What SIGTERM and SIGINT asked of a run: `signal` is the first received (None before
    any); `training` is true once the training loop runs."""

    signal: int | None = None
    training: bool = False


@contextmanager
def stop_requests():
    """Records SIGTERM and SIGINT, for the length of a run, in the `StopRequest` it yields.

    Before training there is nothing to save, and SIGINT stops at once (KeyboardInterrupt).
    In training, the loop honours a request after its current step, having saved a
    checkpoint; a second SIGINT stops at once. The record keeps a signal whose
    KeyboardInterrupt Python dropped, as it drops (and prints) an exception raised while a
    finalizer runs, which TensorFlow's objects do at any moment: the loop then stops
    before its first step instead of the run going on.
    """
    request = StopRequest()

    def handler(signum, frame):
        repeated = request.signal is not None
        request.signal = request.signal or signum
        if signum == signal.SIGINT and (repeated or not request.training):
            raise KeyboardInterrupt

    watched = (signal.SIGTERM, signal.SIGINT)
    try:
        previous = {s: signal.signal(s, handler) for s in watched}
    except ValueError:  # not the main thread: nobody to deliver signals to us
        previous = {}
    try:
        yield request
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
