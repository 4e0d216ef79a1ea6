"""Mobile networks with attention blocks:

- MobileNet (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
  Mobile Vision Applications", 2017, https://arxiv.org/abs/1704.04861): the block after
  each depthwise-separable unit, as SE-MobileNet in the SE paper's Table 3.
- MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks", 2018, https://arxiv.org/abs/1801.04381): the block on each inverted
  residual unit's output, before the addition.

Without attention both have the architecture and exact parameter counts of their
keras.applications counterparts (the classifier as a dense layer). Stages are named by
output stride 2^stage, from stage 2 (stride 4) to stage 5 (stride 32); units before the
first stride-4 unit count as stage 2.
"""

import math

from sectrain.errors import ConfigError
from sectrain.lazy import lazy_import
from sectrain.models.registry import register_model

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")

# (pointwise filters, depthwise stride) of MobileNet's 13 separable units
MOBILENET_UNITS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
MOBILENET_UNITS += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
# (expansion, output channels, units, first stride) of MobileNetV2's stages
MOBILENET_V2_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _stage(stride):
    return max(2, int(math.log2(stride)))


def _depthwise_bn(x, strides, name, sync_bn):
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    x = common.batch_norm(f"{name}_dw_bn", sync_bn)(x)
    return keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)


def check_mobilenet(image_size, *, alpha):
    """Raises ConfigError for a width multiplier that leaves the first convolution (32
    channels at alpha 1) without a channel; returns the network's stage numbers."""
    if int(32 * alpha) < 1:
        raise ConfigError(f"model.options.alpha: must be at least 1/32. Received: {alpha}")
    return (2, 3, 4, 5)


def build_mobilenet(
    num_classes, input_shape, attention=None, sync_bn=False, dropout=0.0, *, alpha=1.0
):
    """MobileNet with width multiplier `alpha`."""
    plan = attention_layers.AttentionPlan(attention)
    inputs = keras.Input(input_shape, name="images")
    x = common.conv_bn(inputs, int(32 * alpha), 3, 2, "conv1", sync_bn, activation="relu6")
    stride = 2
    for i, (filters, strides) in enumerate(MOBILENET_UNITS, start=1):
        stride *= strides
        x = _depthwise_bn(x, strides, f"unit{i}", sync_bn)
        x = common.conv_bn(
            x, int(filters * alpha), 1, 1, f"unit{i}_pw", sync_bn, activation="relu6"
        )
        x = plan.apply(x, f"unit{i}", _stage(stride))
    outputs = common.classifier(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=f"mobilenet_{alpha:g}")


def make_divisible(value, divisor=8):
    """Rounds `value` to a multiple of `divisor`, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def build_mobilenet_v2(
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    *,
    alpha=1.0,
    zero_init_last=False,
):
    """MobileNetV2 with width multiplier `alpha`; `zero_init_last` starts the scale of
    the last batch norm of each unit that adds its input at 0."""
    plan = attention_layers.AttentionPlan(attention)
    inputs = keras.Input(input_shape, name="images")
    x = common.conv_bn(
        inputs, make_divisible(32 * alpha), 3, 2, "conv1", sync_bn, activation="relu6"
    )
    stride, unit = 2, 0
    for expansion, channels, units, first_stride in MOBILENET_V2_STAGES:
        out_channels = make_divisible(channels * alpha)
        for i in range(units):
            unit += 1
            strides = first_stride if i == 0 else 1
            stride *= strides
            name = f"unit{unit}"
            y = x
            if expansion != 1:
                y = common.conv_bn(
                    y, expansion * x.shape[-1], 1, 1, f"{name}_expand", sync_bn, activation="relu6"
                )
            residual = strides == 1 and x.shape[-1] == out_channels
            y = _depthwise_bn(y, strides, name, sync_bn)
            y = common.conv_bn(
                y,
                out_channels,
                1,
                1,
                f"{name}_project",
                sync_bn,
                activation=None,
                zero_init=zero_init_last and residual,
            )
            y = plan.apply(y, name, _stage(stride))
            if residual:
                y = keras.layers.Add(name=f"{name}_add")([x, y])
            x = y
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = common.conv_bn(x, last, 1, 1, "conv_last", sync_bn, activation="relu6")
    outputs = common.classifier(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=f"mobilenet_v2_{alpha:g}")


register_model("mobilenet", build_mobilenet, input_size=224, check=check_mobilenet)
register_model("mobilenet_v2", build_mobilenet_v2, input_size=224)
