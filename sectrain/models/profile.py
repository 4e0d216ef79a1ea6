"""Model cost: parameters and multiply-adds, counted from the built Keras graph."""

import math

import keras

WEIGHTED_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def count_parameters(model):
    """Returns (trainable, total) parameter counts. `total` is Keras' `count_params()`,
    which also counts non-trainable weights such as batch-norm moving statistics."""
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    return trainable, model.count_params()


def count_flops(model):
    """Multiply-adds of one forward pass of one image, as the SE paper counts FLOPs.

    Convolutions and dense layers count one multiply-add per kernel weight at every
    output position; a layer with its own `count_flops(input_shape)` (such as the SE
    block) reports itself. Batch norm and activations are not counted, as in the paper.
    """
    flops = 0
    for layer in model.layers:
        if hasattr(layer, "count_flops"):
            flops += layer.count_flops(layer.input.shape)
        elif isinstance(layer, WEIGHTED_LAYERS):
            flops += math.prod(layer.output.shape[1:-1]) * math.prod(layer.kernel.shape)
    return flops
