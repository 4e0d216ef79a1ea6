"""Channel attention blocks.

Squeeze-and-Excitation: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks",
TPAMI 2019 (https://arxiv.org/abs/1709.01507).
"""

import keras
from keras import layers

from sectrain.registry import Registry

# Names are the values of `model.attention.kind`; "none" means no block.
ATTENTION_LAYERS = Registry("model.attention.kind")

# Gate formulas, applied to the excitation logits z:
#   sigmoid       1 / (1 + exp(-z))            (the paper's choice)
#   hard_sigmoid  relu6(z + 3) / 6             (Keras 3 definition, cheap on mobile)
#   tanh          tanh(z)                      (paper's ablation, Table 12)
#   relu          max(z, 0)                    (paper's ablation, Table 12)
GATES = ("sigmoid", "hard_sigmoid", "tanh", "relu")
SQUEEZES = ("avg", "max")


@ATTENTION_LAYERS.register("se")
@keras.saving.register_keras_serializable(package="sectrain")
class SqueezeExcite(layers.Layer):
    """Squeeze-and-Excitation block: rescales each channel by a learned gate.

    The squeeze pools each channel to one number, two fully connected layers (the first
    reducing the width by `ratio`, with ReLU) produce one gate per channel, and the input
    is multiplied by the gates.

    Args:
        ratio: int, reduction ratio r of the first FC layer (the paper uses 16).
        min_channels: int, lower bound on the reduced width `channels // ratio`.
        squeeze: str, global pooling of the squeeze: "avg" or "max".
        gate: str, activation of the excitation; one of `GATES`.
        use_bias: bool, whether the FC layers have biases (they do in the paper's
            released models; its ablations drop them).

    Example:

    >>> x = keras.random.normal((2, 8, 8, 32))
    >>> SqueezeExcite(ratio=4)(x).shape
    (2, 8, 8, 32)
    """

    def __init__(
        self,
        ratio=16,
        min_channels=1,
        squeeze="avg",
        gate="sigmoid",
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if ratio < 1:
            raise ValueError(f"`ratio` should be at least 1. Received: ratio={ratio}")
        if squeeze not in SQUEEZES:
            raise ValueError(f"`squeeze` should be one of {SQUEEZES}. Received: squeeze={squeeze}")
        if gate not in GATES:
            raise ValueError(f"`gate` should be one of {GATES}. Received: gate={gate}")
        self.ratio = ratio
        self.min_channels = min_channels
        self.squeeze = squeeze
        self.gate = gate
        self.use_bias = use_bias

    def reduced_channels(self, channels):
        return max(self.min_channels, channels // self.ratio)

    def build(self, input_shape):
        channels = input_shape[-1]
        pool = layers.GlobalAveragePooling2D if self.squeeze == "avg" else layers.GlobalMaxPooling2D
        self.pool = pool(keepdims=True, dtype=self.dtype_policy, name="squeeze")
        self.reduce = layers.Dense(
            self.reduced_channels(channels),
            activation="relu",
            use_bias=self.use_bias,
            kernel_initializer="he_normal",
            dtype=self.dtype_policy,
            name="reduce",
        )
        self.expand = layers.Dense(
            channels,
            activation=self.gate,
            use_bias=self.use_bias,
            kernel_initializer="he_normal",
            dtype=self.dtype_policy,
            name="expand",
        )
        pooled_shape = (input_shape[0], 1, 1, channels)
        self.pool.build(input_shape)
        self.reduce.build(pooled_shape)
        self.expand.build(pooled_shape[:-1] + (self.reduced_channels(channels),))

    def call(self, inputs):
        return inputs * self.expand(self.reduce(self.pool(inputs)))

    def count_flops(self, input_shape):
        """Multiply-adds for one image: the squeeze and the rescale touch each input
        element once; each FC weight is one multiply-add on the squeezed 1x1 map."""
        _, height, width, channels = input_shape
        reduced = self.reduced_channels(channels)
        return 2 * height * width * channels + 2 * channels * reduced

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            ratio=self.ratio,
            min_channels=self.min_channels,
            squeeze=self.squeeze,
            gate=self.gate,
            use_bias=self.use_bias,
        )
        return config
