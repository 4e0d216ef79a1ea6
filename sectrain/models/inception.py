"""Inception networks with attention blocks, as in the SE paper's Figures 2 and 3:

- Inception V3 (Szegedy et al., "Rethinking the Inception Architecture for Computer
  Vision", 2016, https://arxiv.org/abs/1512.00567): the block on each Inception
  module's output.
- BN-Inception (Ioffe and Szegedy, "Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift", 2015, https://arxiv.org/abs/1502.03167):
  the block on each Inception module's output, as the SE paper's SE-BN-Inception.
- Inception-ResNet-v2 (Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of
  Residual Connections on Learning", 2017, https://arxiv.org/abs/1602.07261): the block
  on each residual branch, before the scaled addition.

Without attention Inception V3 and Inception-ResNet-v2 have the architecture and exact
parameter counts of their keras.applications counterparts (batch norm without scale, as
there); BN-Inception follows the table of its paper's Figure 5, with convolutions without
bias and batch norm with scale. Stages are named by output stride 2^stage: 35x35 (28x28
in BN-Inception) modules are stage 3, 17x17 (14x14) stage 4, 8x8 (7x7) stage 5.
"""

from sectrain.lazy import lazy_import
from sectrain.models.registry import register_model

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")

INCEPTION_STAGES = (3, 4, 5)
RESIDUAL_PLACEMENTS = ("standard", "pre", "post", "identity")


class _Convs:
    """conv-BN(no scale)-ReLU with numbered names, as keras.applications builds them."""

    def __init__(self, sync_bn):
        self.sync_bn = sync_bn
        self.count = 0

    def __call__(self, x, filters, kernel_size, strides=1, padding="same", activation="relu"):
        self.count += 1
        return common.conv_bn(
            x,
            filters,
            kernel_size,
            strides,
            name=f"conv{self.count}",
            sync_bn=self.sync_bn,
            padding=padding,
            activation=activation,
            scale=False,
        )


def _pool(kind, strides=1, padding="same"):
    pool = keras.layers.AveragePooling2D if kind == "avg" else keras.layers.MaxPooling2D
    return pool(3, strides=strides, padding=padding)


def _concat(branches, name):
    return keras.layers.Concatenate(name=name)(branches)


def _stem(conv, inputs):
    """The shared stem: 299x299 -> 35x35x192."""
    x = conv(inputs, 32, 3, 2, "valid")
    x = conv(x, 32, 3, padding="valid")
    x = conv(x, 64, 3)
    x = _pool("max", 2, "valid")(x)
    x = conv(x, 80, 1, padding="valid")
    x = conv(x, 192, 3, padding="valid")
    return _pool("max", 2, "valid")(x)


def build_inception_v3(num_classes, input_shape, attention=None, sync_bn=False, dropout=0.0):
    """Inception V3 with `attention` on each of its eleven modules (mixed0-mixed10)."""
    plan = attention_layers.AttentionPlan(attention)
    conv = _Convs(sync_bn)
    inputs = keras.Input(input_shape, name="images")
    x = _stem(conv, inputs)

    def module(branches, index, stage):
        return plan.apply(_concat(branches, f"mixed{index}"), f"mixed{index}", stage)

    for index, pool_filters in enumerate((32, 64, 64)):  # 35x35
        b5 = conv(conv(x, 48, 1), 64, 5)
        b3 = conv(conv(conv(x, 64, 1), 96, 3), 96, 3)
        bp = conv(_pool("avg")(x), pool_filters, 1)
        x = module([conv(x, 64, 1), b5, b3, bp], index, 3)

    b3 = conv(x, 384, 3, 2, "valid")  # 35 -> 17
    b3d = conv(conv(conv(x, 64, 1), 96, 3), 96, 3, 2, "valid")
    x = module([b3, b3d, _pool("max", 2, "valid")(x)], 3, 4)

    for index, width in zip(range(4, 8), (128, 160, 160, 192)):  # 17x17
        b7 = conv(conv(conv(x, width, 1), width, (1, 7)), 192, (7, 1))
        b7d = conv(x, width, 1)
        for kernel in ((7, 1), (1, 7), (7, 1)):
            b7d = conv(b7d, width, kernel)
        b7d = conv(b7d, 192, (1, 7))
        bp = conv(_pool("avg")(x), 192, 1)
        x = module([conv(x, 192, 1), b7, b7d, bp], index, 4)

    b3 = conv(conv(x, 192, 1), 320, 3, 2, "valid")  # 17 -> 8
    b7 = conv(conv(conv(x, 192, 1), 192, (1, 7)), 192, (7, 1))
    b7 = conv(b7, 192, 3, 2, "valid")
    x = module([b3, b7, _pool("max", 2, "valid")(x)], 8, 5)

    for index in (9, 10):  # 8x8

        def split(y):
            return [conv(y, 384, (1, 3)), conv(y, 384, (3, 1))]

        b3 = _concat(split(conv(x, 384, 1)), f"mixed{index}_3x3")
        b3d = _concat(split(conv(conv(x, 448, 1), 384, 3)), f"mixed{index}_3x3dbl")
        bp = conv(_pool("avg")(x), 192, 1)
        x = module([conv(x, 320, 1), b3, b3d, bp], index, 5)

    outputs = common.classifier(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name="inception_v3")


def build_inception_resnet_v2(num_classes, input_shape, attention=None, sync_bn=False, dropout=0.0):
    """Inception-ResNet-v2 with `attention` on each residual branch (or, by placement,
    on the block's input, its output or its shortcut)."""
    plan = attention_layers.AttentionPlan(attention)
    conv = _Convs(sync_bn)
    inputs = keras.Input(input_shape, name="images")
    x = _stem(conv, inputs)

    b0 = conv(x, 96, 1)
    b1 = conv(conv(x, 48, 1), 64, 5)
    b2 = conv(conv(conv(x, 64, 1), 96, 3), 96, 3)
    bp = conv(_pool("avg")(x), 64, 1)
    x = _concat([b0, b1, b2, bp], "mixed_5b")

    def residual_block(x, branches, scale, name, stage, activation="relu"):
        """x + scale * up(concat(branches)), where `branches` maps x to branch outputs."""
        x = plan.apply(x, f"{name}_pre", stage, "pre")
        mixed = _concat(branches(x), f"{name}_mixed")
        up = common.conv(x.shape[-1], 1, name=f"{name}_conv", use_bias=True)(mixed)
        up = plan.apply(up, name, stage)
        shortcut = plan.apply(x, f"{name}_identity", stage, "identity")
        x = keras.layers.Add(name=f"{name}_add")(
            [shortcut, keras.layers.Rescaling(scale, name=f"{name}_scale")(up)]
        )
        if activation:
            x = keras.layers.Activation(activation, name=f"{name}_ac")(x)
        return plan.apply(x, f"{name}_post", stage, "post")

    for i in range(1, 11):  # 35x35
        x = residual_block(
            x,
            lambda y: [
                conv(y, 32, 1),
                conv(conv(y, 32, 1), 32, 3),
                conv(conv(conv(y, 32, 1), 48, 3), 64, 3),
            ],
            0.17,
            f"block35_{i}",
            3,
        )

    b0 = conv(x, 384, 3, 2, "valid")
    b1 = conv(conv(conv(x, 256, 1), 256, 3), 384, 3, 2, "valid")
    x = _concat([b0, b1, _pool("max", 2, "valid")(x)], "mixed_6a")

    for i in range(1, 21):  # 17x17
        x = residual_block(
            x,
            lambda y: [conv(y, 192, 1), conv(conv(conv(y, 128, 1), 160, (1, 7)), 192, (7, 1))],
            0.1,
            f"block17_{i}",
            4,
        )

    b0 = conv(conv(x, 256, 1), 384, 3, 2, "valid")
    b1 = conv(conv(x, 256, 1), 288, 3, 2, "valid")
    b2 = conv(conv(conv(x, 256, 1), 288, 3), 320, 3, 2, "valid")
    x = _concat([b0, b1, b2, _pool("max", 2, "valid")(x)], "mixed_7a")

    for i in range(1, 11):  # 8x8; the last block has no activation and scale 1
        last = i == 10
        x = residual_block(
            x,
            lambda y: [conv(y, 192, 1), conv(conv(conv(y, 192, 1), 224, (1, 3)), 256, (3, 1))],
            1.0 if last else 0.2,
            f"block8_{i}",
            5,
            activation=None if last else "relu",
        )

    x = conv(x, 1536, 1)
    outputs = common.classifier(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name="inception_resnet_v2")


# BN-Inception's modules (Figure 5 of Ioffe and Szegedy): name, 1x1 width (0: none),
# 3x3 reduce and width, double-3x3 reduce and width, pool kind, pool projection width
# (0: the pooled input passes through), stride (2: a reduction module)
BN_INCEPTION_MODULES = [
    ("3a", 64, (64, 64), (64, 96), "avg", 32, 1),
    ("3b", 64, (64, 96), (64, 96), "avg", 64, 1),
    ("3c", 0, (128, 160), (64, 96), "max", 0, 2),
    ("4a", 224, (64, 96), (96, 128), "avg", 128, 1),
    ("4b", 192, (96, 128), (96, 128), "avg", 128, 1),
    ("4c", 160, (128, 160), (128, 160), "avg", 128, 1),
    ("4d", 96, (128, 192), (160, 192), "avg", 128, 1),
    ("4e", 0, (128, 192), (192, 256), "max", 0, 2),
    ("5a", 352, (192, 320), (160, 224), "avg", 128, 1),
    ("5b", 352, (192, 320), (192, 224), "max", 128, 1),
]


def build_bn_inception(num_classes, input_shape, attention=None, sync_bn=False, dropout=0.0):
    """BN-Inception with `attention` on each of its ten Inception modules' output."""
    plan = attention_layers.AttentionPlan(attention)
    inputs = keras.Input(input_shape, name="images")

    def conv(x, filters, kernel_size, name, strides=1):
        return common.conv_bn(x, filters, kernel_size, strides, name, sync_bn)

    x = conv(inputs, 64, 7, "conv1", strides=2)
    x = _pool("max", 2)(x)
    x = conv(conv(x, 64, 1, "conv2_reduce"), 192, 3, "conv2")
    x = _pool("max", 2)(x)
    for module, n1x1, (r3, n3), (rd, nd), pool, projection, strides in BN_INCEPTION_MODULES:
        name = f"inception_{module}"
        branches = [] if not n1x1 else [conv(x, n1x1, 1, f"{name}_1x1")]
        branches.append(conv(conv(x, r3, 1, f"{name}_3x3_reduce"), n3, 3, f"{name}_3x3", strides))
        double = conv(conv(x, rd, 1, f"{name}_double_3x3_reduce"), nd, 3, f"{name}_double_3x3_1")
        branches.append(conv(double, nd, 3, f"{name}_double_3x3_2", strides))
        pooled = _pool(pool, strides)(x)
        branches.append(conv(pooled, projection, 1, f"{name}_pool_proj") if projection else pooled)
        # 28x28 modules are stage 3, 14x14 stage 4, 7x7 stage 5 (3c and 4e reduce)
        stage = int(module[0]) + (strides == 2)
        x = plan.apply(_concat(branches, f"{name}_output"), name, stage)
    outputs = common.classifier(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name="bn_inception")


register_model(
    "inception_v3", build_inception_v3, input_size=299, min_size=75, stages=INCEPTION_STAGES
)
register_model(
    "inception_resnet_v2",
    build_inception_resnet_v2,
    input_size=299,
    min_size=75,
    placements=RESIDUAL_PLACEMENTS,
    stages=INCEPTION_STAGES,
)
register_model("bn_inception", build_bn_inception, stages=INCEPTION_STAGES)
