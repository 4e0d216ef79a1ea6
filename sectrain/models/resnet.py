"""ResNets with optional attention blocks: the ImageNet networks (He et al., "Deep Residual
Learning for Image Recognition", 2015, https://arxiv.org/abs/1512.03385) and the CIFAR
networks of the same paper's Section 4.2, in the layout of the SE paper (post-activation,
convolutions without bias followed by batch norm, the attention block on the residual
branch before the addition).

Stages are numbered as in the SE paper: stage 2 is the first residual stage.
"""

from functools import partial

from sectrain.lazy import lazy_import
from sectrain.models.registry import MODELS

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")

FIRST_STAGE = 2
# Where the attention block acts on a residual unit (Figure 5 of the SE paper):
#   standard  on the residual branch, before the addition
#   pre       on the unit's input, before the residual branch
#   post      after the addition and its ReLU
#   identity  on the shortcut, in parallel with the residual branch
PLACEMENTS = ("standard", "pre", "post", "identity")


class _Unit:
    """What every residual unit of one network shares: attention settings and batch norm."""

    def __init__(self, attention, sync_bn):
        attention = dict(attention or {"kind": "none"})
        self.kind = attention.pop("kind")
        self.placement = attention.pop("placement", "standard")
        self.stages = attention.pop("stages", None)
        self.attention_args = attention
        self.sync_bn = sync_bn

    def conv_bn(self, x, filters, kernel_size, strides, name, relu=True):
        x = common.conv(filters, kernel_size, strides, name=f"{name}_conv")(x)
        x = common.batch_norm(f"{name}_bn", self.sync_bn)(x)
        if relu:
            x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
        return x

    def attention(self, x, stage, placement, name):
        """Applies the attention block to `x` if this stage and placement call for it."""
        if self.kind == "none" or self.placement != placement:
            return x
        if self.stages is not None and stage not in self.stages:
            return x
        layer = attention_layers.ATTENTION_LAYERS.get(self.kind)
        return layer(name=f"{name}_{self.kind}", **self.attention_args)(x)

    def shortcut(self, x, filters, strides, name, pad):
        if strides == 1 and x.shape[-1] == filters:
            return x
        if pad:
            return common.PadShortcut(filters, strides, name=f"{name}_0_pad")(x)
        return self.conv_bn(x, filters, 1, strides, f"{name}_0", relu=False)

    def __call__(self, x, residual_fn, filters, strides, stage, name, pad_shortcut=False):
        """A residual unit: `residual_fn(x) + shortcut(x)`, then ReLU, with attention."""
        x = self.attention(x, stage, "pre", name + "_pre")
        shortcut = self.shortcut(x, filters, strides, name, pad_shortcut)
        shortcut = self.attention(shortcut, stage, "identity", name + "_identity")
        residual = self.attention(residual_fn(x), stage, "standard", name)
        x = keras.layers.Add(name=f"{name}_add")([shortcut, residual])
        x = keras.layers.Activation("relu", name=f"{name}_out")(x)
        return self.attention(x, stage, "post", name + "_post")


def basic_block(unit, x, filters, strides, name):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets)."""
    x = unit.conv_bn(x, filters, 3, strides, f"{name}_1")
    return unit.conv_bn(x, filters, 3, 1, f"{name}_2", relu=False)


def bottleneck_block(unit, x, filters, strides, name):
    """1x1 reduce, 3x3, 1x1 expand (x4). The stride sits on the first 1x1, as in the
    original (Caffe) ResNets that the paper's FLOPs are counted on."""
    x = unit.conv_bn(x, filters, 1, strides, f"{name}_1")
    x = unit.conv_bn(x, filters, 3, 1, f"{name}_2")
    return unit.conv_bn(x, 4 * filters, 1, 1, f"{name}_3", relu=False)


BLOCKS = {"basic": (basic_block, 1), "bottleneck": (bottleneck_block, 4)}


def build_resnet(
    block,
    depths,
    widths,
    stem,
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    name="resnet",
):
    """Builds a ResNet.

    Args:
        block: str, "basic" or "bottleneck".
        depths: tuple of int, residual units per stage.
        widths: tuple of int, inner width of each stage's units.
        stem: str, "imagenet" (7x7/2 conv and 3x3/2 max-pool, projection shortcuts) or
            "cifar" (one 3x3 conv, parameter-free padding shortcuts).
        num_classes: int, number of output logits.
        input_shape: tuple (height, width, channels).
        attention: dict of attention settings: `kind` (a name of
            `sectrain.layers.attention.ATTENTION_LAYERS`, or "none"), `placement` (one
            of `PLACEMENTS`), `stages` (list of stage numbers, None for all) and the
            layer's own arguments; None for the plain network.
        sync_bn: bool, synchronise batch-norm statistics across replicas.
        dropout: float, dropout rate before the classifier.
        name: str, the model's name.

    Returns:
        A `keras.Model` mapping images to logits.
    """
    block_fn, expansion = BLOCKS[block]
    unit = _Unit(attention, sync_bn)
    inputs = keras.Input(input_shape, name="images")
    if stem == "imagenet":
        x = unit.conv_bn(inputs, 64, 7, 2, "conv1")
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    else:
        x = unit.conv_bn(inputs, widths[0], 3, 1, "conv1")
    for index, (depth, width) in enumerate(zip(depths, widths)):
        stage = FIRST_STAGE + index
        for i in range(depth):
            strides = 2 if i == 0 and index > 0 else 1
            unit_name = f"conv{stage}_block{i + 1}"
            x = unit(
                x,
                partial(block_fn, unit, filters=width, strides=strides, name=unit_name),
                width * expansion,
                strides,
                stage,
                unit_name,
                pad_shortcut=stem == "cifar",
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    # Logits in float32 even under mixed precision, for a stable softmax and loss.
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _register(name, **arch):
    MODELS.register(name)(partial(build_resnet, name=name, **arch))


IMAGENET_WIDTHS = (64, 128, 256, 512)
for _depth, _block, _depths in [
    (18, "basic", (2, 2, 2, 2)),
    (34, "basic", (3, 4, 6, 3)),
    (50, "bottleneck", (3, 4, 6, 3)),
    (101, "bottleneck", (3, 4, 23, 3)),
    (152, "bottleneck", (3, 8, 36, 3)),
]:
    _register(
        f"resnet{_depth}", block=_block, depths=_depths, widths=IMAGENET_WIDTHS, stem="imagenet"
    )

# CIFAR ResNets: 6n + 2 layers, n basic units per stage, widths 16-32-64.
for _depth in (20, 32, 44, 56, 110):
    _n = (_depth - 2) // 6
    _register(
        f"cifar_resnet{_depth}", block="basic", depths=(_n,) * 3, widths=(16, 32, 64), stem="cifar"
    )
