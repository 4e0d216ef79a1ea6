"""Trains a small SE-ResNet (`helpers.train_weights`) in a process of its own, as a
worker of the multi-worker tests (TF_CONFIG names the worker), and saves its initial and
final weights (and which are trainable), its training losses, its validation loss, that
of its final weights over the whole validation set in this process alone, and what XLA
compiled, as OUT_DIR/run.npz:

    python -m tests.train_job OUT_DIR STRATEGY [--steps N] [--steps-per-call N]
        [--no-sync-bn] [--jit]
"""

import argparse
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("strategy")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--steps-per-call", type=int, default=2)
    parser.add_argument("--no-sync-bn", dest="sync_bn", action="store_false")
    parser.add_argument("--jit", action="store_true", help="XLA")
    args = parser.parse_args()

    import keras

    from tests.helpers import train_weights, validation_arrays

    args.output.mkdir(parents=True, exist_ok=True)
    loop, initial, weights, losses = train_weights(
        args.strategy,
        steps=args.steps,
        steps_per_call=args.steps_per_call,
        sync_bn=args.sync_bn,
        jit_compile=args.jit,
        evaluate=True,
    )
    images, labels, weights = validation_arrays()  # in this process alone
    real = weights == 1  # the padding's blanks left out
    logits = loop.model(images[real], training=False)
    whole_val_loss = keras.losses.sparse_categorical_crossentropy(labels[real], logits, True)
    np.savez(
        args.output / "run.npz",
        **{f"initial_{i}": w for i, w in enumerate(initial)},
        **{f"final_{i}": w for i, w in enumerate(weights)},
        trainable=np.array([v.trainable for v in loop.model.variables]),
        losses=np.array(losses),
        val_loss=loop.results("val")["loss"],
        whole_val_loss=float(np.mean(whole_val_loss)),
        replicas=loop.strategy.num_replicas_in_sync,
        xla=loop.xla,
    )
