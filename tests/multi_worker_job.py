"""One worker of the two-process MultiWorkerMirroredStrategy test (TF_CONFIG names it):
trains a few steps and saves its final weights and losses to the file given."""

import sys

import numpy as np

from tests.helpers import train_weights

if __name__ == "__main__":
    strategy, _, _, weights, losses = train_weights("multi_worker", steps=6, steps_per_call=2)
    assert strategy.num_replicas_in_sync == 2
    np.savez(sys.argv[1], *weights, losses=np.array(losses))
