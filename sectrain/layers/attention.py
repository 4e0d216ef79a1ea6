"""Attention blocks that rescale a feature map, selectable by `model.attention.kind`.

- se: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", TPAMI 2019
  (https://arxiv.org/abs/1709.01507).
- sse, scse: Roy, Navab, Wachinger, "Concurrent Spatial and Channel 'Squeeze &
  Excitation' in Fully Convolutional Networks", MICCAI 2018 (https://arxiv.org/abs/1803.02579).
- eca: Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep
  Convolutional Neural Networks", CVPR 2020 (https://arxiv.org/abs/1910.03151).

Every block maps a (batch, height, width, channels) tensor to one of the same shape and
reports its multiply-adds per image through `count_flops(input_shape)`.
"""

import inspect
import math

import keras
from keras import layers, ops

from sectrain.registry import Registry

# Names are the values of `model.attention.kind`; "none" means no block.
ATTENTION_LAYERS = Registry("model.attention.kind")

# Gate formulas, applied to the excitation logits z:
#   sigmoid       1 / (1 + exp(-z))            (the paper's choice)
#   hard_sigmoid  relu6(z + 3) / 6             (Keras 3 definition, cheap on mobile)
#   tanh          tanh(z)                      (paper's ablation, Table 12)
#   relu          max(z, 0)                    (paper's ablation, Table 12)
GATES = ("sigmoid", "hard_sigmoid", "tanh", "relu")
# "none" is the paper's NoSqueeze ablation (Table 16): no pooling, the FC layers act as
# 1x1 convolutions at every position, so each position gets its own gates.
SQUEEZES = ("avg", "max", "none")


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
        squeeze: str, global pooling of the squeeze: "avg", "max", or "none" for no
            squeeze (the FC layers then act as 1x1 convolutions at every position).
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
        # after a squeeze the FC layers work on (batch, channels): one matmul each, no
        # reshapes; without one, Dense on the last axis is a 1x1 convolution
        if self.squeeze == "none":
            self.pool = None
            fc_input = input_shape[:-1]
        else:
            pool = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
            self.pool = pool[self.squeeze](dtype=self.dtype_policy, name="squeeze")
            self.pool.build(input_shape)
            fc_input = input_shape[:1]
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
        self.reduce.build((*fc_input, channels))
        self.expand.build((*fc_input, self.reduced_channels(channels)))

    def excitation(self, inputs):
        """The gates: (batch, 1, 1, channels) after a squeeze, one per position without."""
        if self.pool is None:
            return self.expand(self.reduce(inputs))
        gates = self.expand(self.reduce(self.pool(inputs)))
        return ops.reshape(gates, (-1, 1, 1, inputs.shape[-1]))

    def call(self, inputs):
        return inputs * self.excitation(inputs)

    def count_flops(self, input_shape):
        """Multiply-adds for one image: one per FC weight at every position it is applied
        (one after a squeeze, every position without) and one per element for the
        rescale; the squeeze's pooling only adds."""
        _, height, width, channels = input_shape
        positions = height * width if self.squeeze == "none" else 1
        fc = 2 * channels * self.reduced_channels(channels)
        return height * width * channels + positions * fc

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


@ATTENTION_LAYERS.register("sse")
@keras.saving.register_keras_serializable(package="sectrain")
class SpatialSqueezeExcite(layers.Layer):
    """Spatial squeeze and channel excitation (sSE): a 1x1 convolution with a sigmoid
    gives one gate per position, shared by all channels.

    Example:

    >>> SpatialSqueezeExcite()(keras.random.normal((2, 8, 8, 32))).shape
    (2, 8, 8, 32)
    """

    def build(self, input_shape):
        self.project = layers.Conv2D(
            1, 1, activation="sigmoid", dtype=self.dtype_policy, name="project"
        )
        self.project.build(input_shape)

    def call(self, inputs):
        return inputs * self.project(inputs)

    def count_flops(self, input_shape):
        """One multiply-add per element for the 1x1 projection, one for the rescale."""
        _, height, width, channels = input_shape
        return 2 * height * width * channels

    def compute_output_shape(self, input_shape):
        return input_shape


@ATTENTION_LAYERS.register("scse")
@keras.saving.register_keras_serializable(package="sectrain")
class ChannelSpatialSqueezeExcite(SqueezeExcite):
    """Concurrent spatial and channel SE (scSE): the sum of the SE block's output (the
    channel branch, cSE) and an sSE block's output on the same input.

    Args: those of `SqueezeExcite`, for the channel branch.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.spatial = SpatialSqueezeExcite(dtype=self.dtype_policy, name="spatial")
        self.spatial.build(input_shape)

    def call(self, inputs):
        return super().call(inputs) + self.spatial(inputs)

    def count_flops(self, input_shape):
        return super().count_flops(input_shape) + self.spatial.count_flops(input_shape)


@ATTENTION_LAYERS.register("eca")
@keras.saving.register_keras_serializable(package="sectrain")
class EfficientChannelAttention(layers.Layer):
    """Efficient channel attention (ECA): global average pooling, then a 1-D convolution
    across neighbouring channels (no dimensionality reduction) and a sigmoid.

    Args:
        kernel_size: int (odd), or None for the paper's adaptive size: the odd number
            nearest to (log2(channels) + beta) / gamma, rounded up.
        gamma: float, slope of the adaptive size.
        beta: float, offset of the adaptive size.
    """

    def __init__(self, kernel_size=None, gamma=2, beta=1, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.gamma = gamma
        self.beta = beta

    def adaptive_kernel_size(self, channels):
        if self.kernel_size:
            return self.kernel_size
        size = int(abs((math.log2(channels) + self.beta) / self.gamma))
        return size if size % 2 else size + 1

    def build(self, input_shape):
        self.pool = layers.GlobalAveragePooling2D(dtype=self.dtype_policy, name="squeeze")
        self.conv = layers.Conv1D(
            1,
            self.adaptive_kernel_size(input_shape[-1]),
            padding="same",
            use_bias=False,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.conv.build((input_shape[0], input_shape[-1], 1))

    def excitation(self, inputs):
        """The gates, (batch, 1, 1, channels)."""
        pooled = ops.expand_dims(self.pool(inputs), -1)  # (batch, channels, 1)
        gates = ops.sigmoid(self.conv(pooled))  # (batch, channels, 1)
        return ops.reshape(gates, (-1, 1, 1, inputs.shape[-1]))

    def call(self, inputs):
        return inputs * self.excitation(inputs)

    def count_flops(self, input_shape):
        _, height, width, channels = input_shape
        return height * width * channels + channels * self.adaptive_kernel_size(channels)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, gamma=self.gamma, beta=self.beta)
        return config


def _arguments(kind):
    """The arguments of the constructor of the registered attention layer `kind`."""
    return inspect.signature(ATTENTION_LAYERS.get(kind).__init__).parameters


def make_attention(kind, name, **settings):
    """A new attention layer of the registered `kind`; it takes from `settings` (the
    `model.attention` config) the arguments its constructor has (see `unused_settings`
    for the others)."""
    accepted = _arguments(kind)
    return ATTENTION_LAYERS.get(kind)(
        name=name, **{k: v for k, v in settings.items() if k in accepted}
    )


def unused_settings(settings, defaults):
    """The `model.attention` settings (a dict) that differ from their `defaults` but that
    the chosen kind of block does not take, so that they change nothing (e.g. a ratio
    for ECA, which a sweep over kinds of block may give)."""
    plan = AttentionPlan(settings)
    if plan.kind == "none":
        return {}
    accepted = _arguments(plan.kind)
    return {
        key: value
        for key, value in plan.layer_settings.items()
        if key not in accepted and value != defaults.get(key)
    }


class AttentionPlan:
    """Where a network gets attention blocks, from its `model.attention` settings.

    Args:
        settings: dict with `kind` (a registered attention layer, or "none"),
            `placement`, `stages` (stage numbers, None for all) and the layer's own
            arguments; None for no attention.
    """

    def __init__(self, settings):
        settings = dict(settings or {"kind": "none"})
        self.kind = settings.pop("kind")
        self.placement = settings.pop("placement", "standard")
        self.stages = settings.pop("stages", None)
        self.layer_settings = settings

    def apply(self, x, name, stage=None, placement="standard"):
        """Returns `x` through a new attention layer named `name_<kind>` if the plan puts
        one at this stage and placement, else `x` unchanged."""
        if self.kind == "none" or placement != self.placement:
            return x
        if self.stages is not None and stage not in self.stages:
            return x
        return make_attention(self.kind, f"{name}_{self.kind}", **self.layer_settings)(x)
