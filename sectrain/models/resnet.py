"""The residual family, from one builder:

- ResNet (He et al., "Deep Residual Learning for Image Recognition", 2015,
  https://arxiv.org/abs/1512.03385) in the SE paper's layout: post-activation,
  convolutions without bias followed by batch norm, the stride of a downsampling
  bottleneck on its first 1x1 convolution (the original Caffe models), and the CIFAR
  ResNets of that paper's Section 4.2.
- Pre-activation ResNet (He et al., "Identity Mappings in Deep Residual Networks", 2016,
  https://arxiv.org/abs/1603.05027), including the CIFAR ResNet-164.
- Wide ResNet (Zagoruyko and Komodakis, "Wide Residual Networks", 2016,
  https://arxiv.org/abs/1605.07146).
- ResNeXt (Xie et al., "Aggregated Residual Transformations for Deep Neural Networks",
  2017, https://arxiv.org/abs/1611.05431) and SENet-154 (the SE paper's appendix).

Attention blocks go on the residual branch before the addition by default; stages are
numbered as in the SE paper, stage 2 being the first residual stage.
"""

import functools

from sectrain.errors import ConfigError, unknown_choice
from sectrain.lazy import lazy_import
from sectrain.models.registry import register_model

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")

FIRST_STAGE = 2
# Where the attention block acts on a residual unit (Figure 5 of the SE paper):
#   standard  on the residual branch, before the addition
#   pre       on the unit's input, before the residual branch
#   post      after the addition (and its ReLU in a post-activation unit)
#   identity  on the shortcut, in parallel with the residual branch
#   3x3       inside the residual branch, on the output of its (first) 3x3 convolution
#             ("SE 3x3", Table 14 of the SE paper)
PLACEMENTS = ("standard", "pre", "post", "identity", "3x3")
BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "deep", "cifar")
SHORTCUTS = ("projection", "projection3x3", "pad")


class _Units:
    """What every residual unit of one network shares: activation order, attention
    settings, shortcut kind, batch-norm synchronisation and initialisation."""

    def __init__(self, attention, sync_bn, preact, shortcut, zero_init_last):
        self.plan = attention_layers.AttentionPlan(attention)
        self.sync_bn = sync_bn
        self.preact = preact
        self.shortcut_kind = shortcut
        self.zero_init_last = zero_init_last

    def bn_relu(self, x, name):
        x = common.batch_norm(f"{name}_bn", self.sync_bn)(x)
        return keras.layers.Activation("relu", name=f"{name}_relu")(x)

    def layer(self, x, filters, kernel_size, strides, name, first=False, last=False, groups=1):
        """One convolution of a residual branch: conv-BN-ReLU (no ReLU on the last) in
        post-activation units, BN-ReLU-conv (the unit pre-activates the first) otherwise."""
        make_conv = common.conv(filters, kernel_size, strides, name=f"{name}_conv", groups=groups)
        if self.preact:
            return make_conv(x if first else self.bn_relu(x, name))
        zero_init = last and self.zero_init_last
        x = common.batch_norm(f"{name}_bn", self.sync_bn, zero_init=zero_init)(make_conv(x))
        return x if last else keras.layers.Activation("relu", name=f"{name}_relu")(x)

    def shortcut(self, x, filters, strides, name, project_from=None):
        """`x` itself where the shape is kept, else a projection of `project_from` (the
        pre-activated input in a pre-activation unit) or of `x`."""
        if strides == 1 and x.shape[-1] == filters:
            return x
        x = x if project_from is None else project_from
        if self.shortcut_kind == "pad":
            return common.PadShortcut(filters, strides, name=f"{name}_0_pad")(x)
        # SENet-154 projects with a 3x3 where it downsamples, with a 1x1 elsewhere
        kernel_size = 3 if self.shortcut_kind == "projection3x3" and strides > 1 else 1
        x = common.conv(filters, kernel_size, strides, name=f"{name}_0_conv")(x)
        return x if self.preact else common.batch_norm(f"{name}_0_bn", self.sync_bn)(x)

    def __call__(self, x, branch, filters, strides, stage, name):
        """A residual unit: the sum of `branch(x)` and the shortcut, with attention."""
        x = self.plan.apply(x, f"{name}_pre", stage, "pre")
        if self.preact:
            activated = self.bn_relu(x, f"{name}_preact")
            shortcut = self.shortcut(x, filters, strides, name, project_from=activated)
            residual = branch(activated)
        else:
            shortcut = self.shortcut(x, filters, strides, name)
            residual = branch(x)
        shortcut = self.plan.apply(shortcut, f"{name}_identity", stage, "identity")
        residual = self.plan.apply(residual, name, stage)
        x = keras.layers.Add(name=f"{name}_add")([shortcut, residual])
        if not self.preact:
            x = keras.layers.Activation("relu", name=f"{name}_out")(x)
        return self.plan.apply(x, f"{name}_post", stage, "post")


def _stem(units, x, stem, width):
    if stem == "imagenet":  # 7x7/2 convolution, 3x3/2 max-pool
        x = units.bn_relu(common.conv(width, 7, 2, name="conv1_conv")(x), "conv1")
        return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    if stem == "deep":  # SENet-154: three 3x3 convolutions replace the 7x7
        for i, (filters, strides) in enumerate([(width // 2, 2), (width // 2, 1), (width, 1)]):
            conv = common.conv(filters, 3, strides, name=f"conv1_{i + 1}_conv")
            x = units.bn_relu(conv(x), f"conv1_{i + 1}")
        return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    # cifar: one 3x3 convolution; a pre-activation network activates it in its first unit
    x = common.conv(width, 3, 1, name="conv1_conv")(x)
    return x if units.preact else units.bn_relu(x, "conv1")


def check_architecture(
    image_size, *, block, depths, planes, stem, shortcut, preact, zero_init_last, **others
):
    """Raises ConfigError for model.options that `build_resnet` cannot build; returns the
    network's stage numbers. (The registry has checked the kinds of all options.)"""
    for key, value, choices in (
        ("block", block, BLOCKS),
        ("stem", stem, STEMS),
        ("shortcut", shortcut, SHORTCUTS),
    ):
        if value not in choices:
            raise unknown_choice(f"model.options.{key}", value, choices)
    if len(depths) != len(planes):
        raise ConfigError(
            f"model.options.depths: give one depth per stage, as many as model.options.planes "
            f"has widths ({list(planes)}). Received: {list(depths)}"
        )
    if preact and zero_init_last:
        raise ConfigError(
            "model.options.zero_init_last: a pre-activation unit ends in a convolution, "
            "not a batch norm; it applies to post-activation networks only"
        )
    return range(FIRST_STAGE, FIRST_STAGE + len(depths))


def build_resnet(
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    *,
    block,
    depths,
    planes,
    stem="imagenet",
    stem_width=64,
    preact=False,
    shortcut="projection",
    groups=1,
    width_per_group=64,
    first_1x1_scale=1.0,
    stride_on_3x3=False,
    zero_init_last=False,
    name="resnet",
):
    """Builds a network of the residual family.

    Args:
        num_classes: int, number of output logits.
        input_shape: tuple (height, width, channels).
        attention: dict of attention settings: `kind` (a registered attention layer, or
            "none"), `placement` (one of `PLACEMENTS`), `stages` (stage numbers, None for
            all) and the layer's own arguments; None for the plain network.
        sync_bn: bool, synchronise batch-norm statistics across replicas.
        dropout: float, dropout rate before the classifier.
        block: str, "basic" (two 3x3 convolutions) or "bottleneck" (1x1, 3x3, 1x1 with
            4x expansion).
        depths: tuple of int, residual units per stage.
        planes: tuple of int, per stage: the width of a basic unit, or the output width
            / 4 of a bottleneck unit.
        stem: str, "imagenet", "deep" (three 3x3 convolutions) or "cifar".
        stem_width: int, output channels of the stem.
        preact: bool, pre-activation units (BN-ReLU before each convolution).
        shortcut: str, "projection" (1x1 conv), "projection3x3" (3x3 conv where it
            downsamples, 1x1 elsewhere) or "pad" (parameter-free subsample and zero-pad),
            where the shape changes.
        groups: int, groups of the bottleneck's 3x3 convolution (ResNeXt cardinality).
        width_per_group: int, with `groups`, the 3x3 width: planes * width_per_group /
            64 * groups.
        first_1x1_scale: float, width of the first 1x1 relative to the 3x3 width.
        stride_on_3x3: bool, put a downsampling bottleneck's stride on its 3x3 instead
            of its first 1x1.
        zero_init_last: bool, start the scale of each residual branch's last batch norm
            at 0, so that every unit begins as its shortcut (post-activation units).
        name: str, the model's name.

    Returns:
        A `keras.Model` mapping images to logits.
    """
    units = _Units(attention, sync_bn, preact, shortcut, zero_init_last)
    inputs = keras.Input(input_shape, name="images")
    x = _stem(units, inputs, stem, stem_width)
    for index, (depth, width) in enumerate(zip(depths, planes)):
        stage = FIRST_STAGE + index
        for i in range(depth):
            strides = 2 if i == 0 and index > 0 else 1
            unit_name = f"conv{stage}_block{i + 1}"
            if block == "basic":
                out_channels = width

                def branch(x, width=width, strides=strides, unit_name=unit_name, stage=stage):
                    x = units.layer(x, width, 3, strides, f"{unit_name}_1", first=True)
                    x = units.plan.apply(x, f"{unit_name}_3x3", stage, "3x3")
                    return units.layer(x, width, 3, 1, f"{unit_name}_2", last=True)

            else:
                out_channels = 4 * width
                inner = int(width * width_per_group / 64) * groups

                def branch(
                    x,
                    inner=inner,
                    out=out_channels,
                    strides=strides,
                    unit_name=unit_name,
                    stage=stage,
                ):
                    first_strides, middle_strides = (1, strides) if stride_on_3x3 else (strides, 1)
                    first_width = int(inner * first_1x1_scale)
                    x = units.layer(x, first_width, 1, first_strides, f"{unit_name}_1", first=True)
                    x = units.layer(x, inner, 3, middle_strides, f"{unit_name}_2", groups=groups)
                    x = units.plan.apply(x, f"{unit_name}_3x3", stage, "3x3")
                    return units.layer(x, out, 1, 1, f"{unit_name}_3", last=True)

            x = units(x, branch, out_channels, strides, stage, unit_name)
    if preact:
        x = units.bn_relu(x, "post")
    return keras.Model(inputs, common.classifier(x, num_classes, dropout), name=name)


def _register(name, **architecture):
    # the architecture's arguments stay open as model.options, with these defaults
    build = functools.partial(build_resnet, **architecture, name=name)
    size = {"input_size": 32, "num_classes": 10} if architecture.get("stem") == "cifar" else {}
    register_model(name, build, placements=PLACEMENTS, check=check_architecture, **size)


IMAGENET_PLANES = (64, 128, 256, 512)
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
for _depth, (_block, _depths) in IMAGENET_DEPTHS.items():
    _register(f"resnet{_depth}", block=_block, depths=_depths, planes=IMAGENET_PLANES)
    # the pre-activation variant, as in the original Keras SE project
    _register(
        f"preact_resnet{_depth}",
        block=_block,
        depths=_depths,
        planes=IMAGENET_PLANES,
        preact=True,
        stride_on_3x3=True,
    )

for _depth in (50, 101):
    _register(
        f"resnext{_depth}_32x4d",
        block="bottleneck",
        depths=IMAGENET_DEPTHS[_depth][1],
        planes=IMAGENET_PLANES,
        groups=32,
        width_per_group=4,
        stride_on_3x3=True,
    )

# CIFAR ResNeXt-29 8x64d (ResNeXt paper, Section 5.3; the original Keras SE project's
# default SE-ResNeXt): three stages of three bottlenecks, 8 groups of 64 channels.
_register(
    "cifar_resnext29_8x64d",
    block="bottleneck",
    depths=(3, 3, 3),
    planes=(64, 128, 256),
    stem="cifar",
    stem_width=64,
    groups=8,
    width_per_group=64,
    stride_on_3x3=True,
)

# SENet-154 (SE paper, appendix): ResNeXt-152 64x4d with the first 1x1 of each bottleneck
# halved, a deep stem, 3x3 stride-2 projections; dropout 0.2 is set in its config.
_register(
    "senet154",
    block="bottleneck",
    depths=IMAGENET_DEPTHS[152][1],
    planes=IMAGENET_PLANES,
    stem="deep",
    stem_width=128,
    shortcut="projection3x3",
    groups=64,
    width_per_group=4,
    first_1x1_scale=0.5,
    stride_on_3x3=True,
)

# CIFAR ResNets: 6n + 2 layers, n basic units per stage, widths 16-32-64.
for _depth in (20, 32, 44, 56, 110):
    _register(
        f"cifar_resnet{_depth}",
        block="basic",
        depths=((_depth - 2) // 6,) * 3,
        planes=(16, 32, 64),
        stem="cifar",
        stem_width=16,
        shortcut="pad",
    )

# Pre-activation ResNet-164: 9n + 2 layers, n = 18 bottleneck units per stage.
_register(
    "preact_resnet164",
    block="bottleneck",
    depths=(18, 18, 18),
    planes=(16, 32, 64),
    stem="cifar",
    stem_width=16,
    preact=True,
    stride_on_3x3=True,
)


def check_wide_resnet(image_size, *, depth, width):
    """Raises ConfigError unless `depth` is 6n + 4; returns the network's stage numbers."""
    if (depth - 4) % 6 or depth < 10:
        raise ConfigError(
            f"model.options.depth: must be 6n + 4 (10, 16, 22, 28, ...). Received: {depth}"
        )
    return (2, 3, 4)


def build_wide_resnet(
    num_classes, input_shape, attention=None, sync_bn=False, dropout=0.0, *, depth=16, width=8
):
    """Wide ResNet WRN-`depth`-`width`: pre-activation basic units, (depth - 4) / 6 per
    stage, widths 16k-32k-64k for k = `width`."""
    return build_resnet(
        num_classes,
        input_shape,
        attention,
        sync_bn,
        dropout,
        block="basic",
        depths=((depth - 4) // 6,) * 3,
        planes=(16 * width, 32 * width, 64 * width),
        stem="cifar",
        stem_width=16,
        preact=True,
        name=f"wrn{depth}_{width}",
    )


register_model(
    "wrn",
    build_wide_resnet,
    input_size=32,
    num_classes=10,
    placements=PLACEMENTS,
    check=check_wide_resnet,
)
