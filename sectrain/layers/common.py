"""Small building blocks shared by the model families."""

import keras
from keras import layers, ops

# Caffe / PyTorch batch-norm settings used by the paper's networks. Keras' default
# momentum (0.99) makes the moving statistics lag badly on small data sets.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(name, synchronized=False, scale=True, zero_init=False):
    """Batch norm; `zero_init` starts its scale at 0, so that a residual branch it ends
    adds nothing at first (Goyal et al., https://arxiv.org/abs/1706.02677, Section 5.1)."""
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        synchronized=synchronized,
        scale=scale,
        gamma_initializer="zeros" if zero_init else "ones",
        name=name,
    )


def conv(filters, kernel_size, strides=1, name=None, groups=1, padding="same", use_bias=False):
    """Convolution, by default without bias (a batch norm follows), He-normal initialised."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=use_bias,
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


@keras.saving.register_keras_serializable(package="sectrain")
class ChannelShuffle(layers.Layer):
    """ShuffleNet's channel shuffle: with the channels in `groups` groups of n, channel
    j of group i moves to position j * groups + i, so that the next grouped
    convolution sees channels of every group.

    Args:
        groups: int, the groups of the grouped convolution before it.

    Example:

    >>> ChannelShuffle(2)(keras.ops.arange(4.0)[None, None, None, :]).numpy().ravel()
    array([0., 2., 1., 3.], dtype=float32)
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def call(self, inputs):
        shape = ops.shape(inputs)
        channels = inputs.shape[-1]
        x = ops.reshape(inputs, (-1, shape[1], shape[2], self.groups, channels // self.groups))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups)
        return config


def conv_bn(
    x,
    filters,
    kernel_size,
    strides=1,
    name=None,
    sync_bn=False,
    padding="same",
    activation="relu",
    scale=True,
    groups=1,
    zero_init=False,
):
    """Convolution without bias, batch norm, then `activation` (None: none)."""
    x = conv(filters, kernel_size, strides, f"{name}_conv", groups, padding)(x)
    x = batch_norm(f"{name}_bn", sync_bn, scale, zero_init)(x)
    return x if activation is None else layers.Activation(activation, name=f"{name}_act")(x)


def classifier(x, num_classes, dropout=0.0):
    """Global average pooling, optional dropout, and the logits."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return logits(x, num_classes)


def logits(x, num_classes):
    """The dense layer giving a model's logits, in float32 even under mixed precision."""
    return layers.Dense(num_classes, dtype="float32", name="predictions")(x)


@keras.saving.register_keras_serializable(package="sectrain")
class ShakeShake(layers.Layer):
    """Combines two residual branches a and b as alpha * a + (1 - alpha) * b (Gastaldi,
    "Shake-Shake regularization", 2017, https://arxiv.org/abs/1705.07485).

    In training, `forward` draws alpha per image, uniform in [0, 1) ("shake"), or sets it
    to 0.5 ("even"); gradients flow to the branches with weights beta and 1 - beta, where
    `backward` draws beta anew per image ("shake"), sets it to 0.5 ("even") or keeps
    alpha ("keep"). At inference alpha is 0.5.

    Args:
        forward: str, "shake" or "even".
        backward: str, "shake", "even" or "keep".
        seed: int or None, seed of the layer's random draws.
    """

    def __init__(self, forward="shake", backward="shake", seed=None, **kwargs):
        super().__init__(**kwargs)
        # not `self.forward`: a layer's method name on the torch backend
        self.forward_mode, self.backward_mode, self.seed = forward, backward, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        a, b = inputs
        if not training:
            return 0.5 * (a + b)
        shape = (ops.shape(a)[0], 1, 1, 1)

        def draw():
            return keras.random.uniform(shape, dtype=a.dtype, seed=self.seed_generator)

        alpha = draw() if self.forward_mode == "shake" else 0.5
        beta = {"shake": draw, "even": lambda: 0.5, "keep": lambda: alpha}[self.backward_mode]()
        # the value of alpha * a + (1 - alpha) * b, the gradients of beta * a + (1 - beta) * b
        return beta * a + (1 - beta) * b + ops.stop_gradient((alpha - beta) * (a - b))

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        config = super().get_config()
        config.update(forward=self.forward_mode, backward=self.backward_mode, seed=self.seed)
        return config
