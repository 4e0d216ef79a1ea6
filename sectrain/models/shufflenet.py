"""ShuffleNet (Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional
Neural Network for Mobile Devices", 2018, https://arxiv.org/abs/1707.01083) with an
attention block on each unit's residual branch, before the addition or concatenation,
as SE-ShuffleNet in the SE paper's Table 3.

Units: a grouped 1x1 convolution to a quarter of the stage's width, channel shuffle, a
3x3 depthwise convolution, a grouped 1x1 convolution; the first unit of a stage
concatenates its branch with a 3x3 average-pooled shortcut, the others add the input.
ShuffleNet's Stage2-4 work at output strides 8, 16 and 32, so sectrain names them
stages 3-5, by output stride as for the other families.
"""

from sectrain.errors import ConfigError
from sectrain.lazy import lazy_import
from sectrain.models.registry import register_model

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")

# groups -> output channels of stages 3-5 (Table 1 of the ShuffleNet paper)
STAGE_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960)}
STAGE_WIDTHS |= {4: (272, 544, 1088), 8: (384, 768, 1536)}
UNITS = (4, 8, 4)
STEM_WIDTH = 24


def check_shufflenet(image_size, *, groups, zero_init_last):
    """Raises ConfigError for groups the ShuffleNet paper does not define; returns the
    stage numbers."""
    if groups not in STAGE_WIDTHS:
        raise ConfigError(
            f"model.options.groups: one of {', '.join(map(str, STAGE_WIDTHS))}. Received: {groups}"
        )
    return (3, 4, 5)


def build_shufflenet(
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    *,
    groups=3,
    zero_init_last=False,
):
    """ShuffleNet 1x with `groups` groups in its 1x1 convolutions; `zero_init_last`
    starts the scale of the last batch norm of each unit that adds its input at 0."""
    plan = attention_layers.AttentionPlan(attention)
    inputs = keras.Input(input_shape, name="images")
    x = common.conv_bn(inputs, STEM_WIDTH, 3, 2, "conv1", sync_bn)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, units, out in zip((3, 4, 5), UNITS, STAGE_WIDTHS[groups]):
        for i in range(1, units + 1):
            name = f"stage{stage}_unit{i}"
            strides = 2 if i == 1 else 1
            branch_out = out - x.shape[-1] if strides == 2 else out
            # the stem's 24 channels are too few to split: the first 1x1 is not grouped
            first_groups = 1 if stage == 3 and i == 1 else groups
            y = common.conv_bn(x, out // 4, 1, 1, f"{name}_1", sync_bn, groups=first_groups)
            if groups > 1:
                y = common.ChannelShuffle(groups, name=f"{name}_shuffle")(y)
            y = keras.layers.DepthwiseConv2D(
                3, strides, padding="same", use_bias=False, name=f"{name}_dw"
            )(y)
            y = common.batch_norm(f"{name}_dw_bn", sync_bn)(y)
            y = common.conv_bn(
                y,
                branch_out,
                1,
                1,
                f"{name}_2",
                sync_bn,
                activation=None,
                groups=groups,
                zero_init=zero_init_last and strides == 1,
            )
            y = plan.apply(y, name, stage)
            if strides == 2:
                shortcut = keras.layers.AveragePooling2D(
                    3, strides=2, padding="same", name=f"{name}_pool"
                )(x)
                x = keras.layers.Concatenate(name=f"{name}_concat")([shortcut, y])
            else:
                x = keras.layers.Add(name=f"{name}_add")([x, y])
            x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    outputs = common.classifier(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=f"shufflenet_g{groups}")


register_model("shufflenet", build_shufflenet, check=check_shufflenet)
