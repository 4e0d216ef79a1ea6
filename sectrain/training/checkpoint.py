"""Checkpoints: what lets a run resume exactly after any stop."""

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
