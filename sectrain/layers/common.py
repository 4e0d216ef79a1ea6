"""Small building blocks shared by the model families."""

import keras
from keras import layers, ops

# Caffe / PyTorch batch-norm settings used by the paper's networks. Keras' default
# momentum (0.99) makes the moving statistics lag badly on small data sets.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(name, synchronized=False):
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized, name=name
    )


def conv(filters, kernel_size, strides=1, name=None, groups=1):
    """Convolution without bias (a batch norm follows), He-normal initialised."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        groups=groups,
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


@keras.saving.register_keras_serializable(package="sectrain")
class PadShortcut(layers.Layer):
    """Parameter-free shortcut of He et al.'s CIFAR ResNets ("option A").

    Subsamples the input by `strides` and zero-pads its channels, evenly on both sides,
    up to `filters`.

    Args:
        filters: int, number of output channels (at least the input's).
        strides: int, spatial subsampling factor.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        extra = self.filters - inputs.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def subsample(size):
            return None if size is None else -(-size // self.strides)

        return (batch, subsample(height), subsample(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides)
        return config
