"""Shake-Shake residual networks for CIFAR (Gastaldi, "Shake-Shake regularization",
2017, https://arxiv.org/abs/1705.07485), the base networks of the SE paper's Tables 4
and 5: each residual unit has two branches, combined by a random affine combination
in training (`ShakeShake`), with the attention block on the combined residual before
the addition by default; the other placements of the residual families apply as well
("3x3": in each branch, after its (grouped) 3x3 convolution).

- Shake-Shake 26 2x96d (CIFAR-10): basic branches (ReLU, 3x3 conv, BN, ReLU, 3x3 conv,
  BN), 4 units per stage, widths 96-192-384.
- Shake-Even 29 2x4x64d (CIFAR-100): ResNeXt bottleneck branches (1x1 conv, 3x3 conv
  with 4 groups of 64 channels, 1x1 conv), 3 units per stage, outputs 256-512-1024.

Where a unit changes the shape, its shortcut is Gastaldi's: ReLU, then two 1x1
convolutions of half the output width, on the input subsampled and on the input
shifted by one pixel and subsampled, concatenated and batch-normalised.
"""

import functools

from sectrain.errors import ConfigError, unknown_choice
from sectrain.lazy import lazy_import
from sectrain.models.registry import register_model
from sectrain.models.resnet import PLACEMENTS

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")

# block -> the layers one more unit in each stage adds: depth = layers * units + 2
BLOCKS = {"basic": 6, "bottleneck": 9}
FORWARD = ("shake", "even")
BACKWARD = ("shake", "even", "keep")


def check_shake_shake(image_size, *, block, depth, width, groups, forward, backward, **others):
    """Raises ConfigError for model.options `build_shake_shake` cannot build; returns the
    stage numbers."""
    for key, value, choices in (
        ("block", block, tuple(BLOCKS)),
        ("forward", forward, FORWARD),
        ("backward", backward, BACKWARD),
    ):
        if value not in choices:
            raise unknown_choice(f"model.options.{key}", value, choices)
    per_unit = BLOCKS[block]
    if (depth - 2) % per_unit or depth < per_unit + 2:
        raise ConfigError(
            f"model.options.depth: a {block} network has {per_unit}n + 2 layers "
            f"({', '.join(str(per_unit * n + 2) for n in (1, 2, 3, 4))}, ...). Received: {depth}"
        )
    if block == "basic" and width % 2:  # the shortcut's two paths are half as wide each
        raise ConfigError(f"model.options.width: must be even. Received: {width}")
    if block == "basic" and groups != 1:
        raise ConfigError(
            f"model.options.groups: basic branches have no grouped convolution; give "
            f"groups=1 or block=bottleneck. Received: {groups}"
        )
    return (2, 3, 4)


def build_shake_shake(
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    *,
    block="basic",
    depth=26,
    width=96,
    groups=1,
    stem_width=16,
    forward="shake",
    backward="shake",
    name="shake_shake",
):
    """A two-branch Shake-Shake network.

    Args:
        block: str, "basic" or "bottleneck" branches.
        depth: int, layers: 6n + 2 (basic) or 9n + 2 (bottleneck) for n units per stage.
        width: int, basic: the first stage's width; bottleneck: the channels of each
            group of the first stage's 3x3 convolution. Both double at each stage.
        groups: int, groups of a bottleneck's 3x3 convolution; the bottleneck's
            output has 4 * width channels at the first stage, whatever the groups.
        stem_width: int, output channels of the 3x3 stem convolution.
        forward, backward: str, how the branches' weights are drawn (see `ShakeShake`).
        name: str, the model's name.
    """
    plan = attention_layers.AttentionPlan(attention)
    inputs = keras.Input(input_shape, name="images")
    x = common.conv_bn(inputs, stem_width, 3, 1, "conv1", sync_bn, activation=None)
    units = (depth - 2) // BLOCKS[block]
    for index in range(3):
        stage, scale = index + 2, 2**index
        out = (width if block == "basic" else 4 * width) * scale
        for i in range(units):
            unit = f"conv{stage}_block{i + 1}"
            strides = 2 if i == 0 and index > 0 else 1
            x = plan.apply(x, f"{unit}_pre", stage, "pre")
            branches = []
            for b in (1, 2):
                y = keras.layers.Activation("relu", name=f"{unit}_branch{b}_relu")(x)
                prefix = f"{unit}_branch{b}"
                if block == "basic":
                    y = common.conv_bn(y, out, 3, strides, f"{prefix}_1", sync_bn)
                    y = plan.apply(y, f"{prefix}_3x3", stage, "3x3")
                    y = common.conv_bn(y, out, 3, 1, f"{prefix}_2", sync_bn, activation=None)
                else:
                    inner = groups * width * scale
                    y = common.conv_bn(y, inner, 1, 1, f"{prefix}_1", sync_bn)
                    y = common.conv_bn(y, inner, 3, strides, f"{prefix}_2", sync_bn, groups=groups)
                    y = plan.apply(y, f"{prefix}_3x3", stage, "3x3")
                    y = common.conv_bn(y, out, 1, 1, f"{prefix}_3", sync_bn, activation=None)
                branches.append(y)
            residual = common.ShakeShake(forward, backward, name=f"{unit}_shake")(branches)
            residual = plan.apply(residual, unit, stage)
            shortcut = (
                x
                if x.shape[-1] == out and strides == 1
                else _shortcut(x, out, strides, unit, sync_bn)
            )
            shortcut = plan.apply(shortcut, f"{unit}_identity", stage, "identity")
            x = keras.layers.Add(name=f"{unit}_add")([shortcut, residual])
            x = plan.apply(x, f"{unit}_post", stage, "post")
    x = keras.layers.Activation("relu", name="post_relu")(x)
    return keras.Model(inputs, common.classifier(x, num_classes, dropout), name=name)


def _shortcut(x, filters, strides, name, sync_bn):
    x = keras.layers.Activation("relu", name=f"{name}_0_relu")(x)
    shifted = keras.layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"{name}_0_pad")(x)
    shifted = keras.layers.Cropping2D(((0, 1), (0, 1)), name=f"{name}_0_shift")(shifted)
    paths = []
    for p, y in enumerate((x, shifted), start=1):
        y = keras.layers.AveragePooling2D(1, strides, name=f"{name}_0_subsample{p}")(y)
        paths.append(common.conv(filters // 2, 1, name=f"{name}_0_conv{p}")(y))
    x = keras.layers.Concatenate(name=f"{name}_0_concat")(paths)
    return common.batch_norm(f"{name}_0_bn", sync_bn)(x)


def _register(name, **architecture):
    build = functools.partial(build_shake_shake, **architecture, name=name)
    register_model(
        name, build, input_size=32, num_classes=10, placements=PLACEMENTS, check=check_shake_shake
    )


_register("shake_shake26_2x96d")
_register(
    "shake_even29_2x4x64d",
    block="bottleneck",
    depth=29,
    width=64,
    groups=4,
    stem_width=64,
    backward="even",
)
