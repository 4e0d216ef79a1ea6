"""DenseNets (Huang et al., "Densely Connected Convolutional Networks", 2017,
https://arxiv.org/abs/1608.06993) with an attention block on the output of each dense
block, as in the original Keras SE project.

Without attention the ImageNet configurations have the architecture and exact parameter
counts of keras.applications' DenseNet121/169/201. Dense block n works at output stride
2^(n+1): stages 2-5 on ImageNet, 2-4 in the CIFAR layout.
"""

import functools

from sectrain.errors import ConfigError, unknown_choice
from sectrain.lazy import lazy_import
from sectrain.models.registry import register_model

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")


def _bn_relu(x, name, sync_bn):
    x = common.batch_norm(f"{name}_bn", sync_bn)(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


# stem -> the factor by which it divides the input's side
STEMS = {"imagenet": 4, "cifar": 1}


def check_densenet(image_size, *, blocks, compression, stem, **others):
    """Raises ConfigError for model.options that `build_densenet` cannot build; returns
    the network's stage numbers. (The registry has checked the kinds of all options.)"""
    if stem not in STEMS:
        raise unknown_choice("model.options.stem", stem, STEMS)
    if compression > 1:
        raise ConfigError(f"model.options.compression: must be at most 1. Received: {compression}")
    # each transition halves the side the stem leaves (valid pooling)
    if image_size // STEMS[stem] // 2 ** (len(blocks) - 1) < 1:
        raise ConfigError(
            f"model.options.blocks: {len(blocks)} dense blocks leave nothing of a "
            f"{image_size}x{image_size} input. Received: {list(blocks)}"
        )
    return range(2, 2 + len(blocks))


def build_densenet(
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    *,
    blocks=(6, 12, 24, 16),
    growth_rate=32,
    init_filters=64,
    bottleneck=True,
    compression=0.5,
    stem="imagenet",
    name="densenet",
):
    """Builds a DenseNet.

    Args:
        num_classes, input_shape, attention, sync_bn, dropout: as for every model.
        blocks: layers in each dense block.
        growth_rate: int, channels each layer adds (k).
        init_filters: int, channels of the stem.
        bottleneck: bool, a 1x1 convolution to 4k channels before each 3x3 (DenseNet-B).
        compression: float in (0, 1], channel factor of each transition (DenseNet-C).
        stem: "imagenet" (7x7/2 convolution, 3x3/2 max-pool) or "cifar" (a 3x3
            convolution).
        name: str, the model's name.
    """
    plan = attention_layers.AttentionPlan(attention)
    inputs = keras.Input(input_shape, name="images")
    if stem == "imagenet":
        x = _bn_relu(common.conv(init_filters, 7, 2, name="conv1_conv")(inputs), "conv1", sync_bn)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    else:
        x = common.conv(init_filters, 3, 1, name="conv1_conv")(inputs)
    for index, layers in enumerate(blocks):
        stage = index + 2
        for i in range(1, layers + 1):
            name_i = f"conv{stage}_block{i}"
            y = x
            if bottleneck:
                y = _bn_relu(y, f"{name_i}_0", sync_bn)
                y = common.conv(4 * growth_rate, 1, name=f"{name_i}_1_conv")(y)
            y = _bn_relu(y, f"{name_i}_1", sync_bn)
            y = common.conv(growth_rate, 3, name=f"{name_i}_2_conv")(y)
            x = keras.layers.Concatenate(name=f"{name_i}_concat")([x, y])
        x = plan.apply(x, f"conv{stage}", stage)
        if index < len(blocks) - 1:
            name_t = f"pool{stage}"
            x = _bn_relu(x, name_t, sync_bn)
            x = common.conv(int(x.shape[-1] * compression), 1, name=f"{name_t}_conv")(x)
            x = keras.layers.AveragePooling2D(2, strides=2, name=f"{name_t}_pool")(x)
    x = _bn_relu(x, "final", sync_bn)
    return keras.Model(inputs, common.classifier(x, num_classes, dropout), name=name)


IMAGENET = {
    121: dict(blocks=(6, 12, 24, 16)),
    169: dict(blocks=(6, 12, 32, 32)),
    201: dict(blocks=(6, 12, 48, 32)),
    264: dict(blocks=(6, 12, 64, 48)),
    161: dict(blocks=(6, 12, 36, 24), growth_rate=48, init_filters=96),
}
for _depth, _architecture in IMAGENET.items():
    # the architecture's arguments stay open as model.options, with these defaults
    _build = functools.partial(build_densenet, **_architecture, name=f"densenet{_depth}")
    register_model(f"densenet{_depth}", _build, input_size=224, check=check_densenet)


def _cifar_blocks(depth, bottleneck):
    """The dense blocks of a CIFAR DenseNet of `depth` layers: three of (depth - 4) / 3
    convolutions each, a bottleneck layer counting as two."""
    per_layer = 2 if bottleneck else 1
    if (depth - 4) % (3 * per_layer) or depth < 4 + 3 * per_layer:
        raise ConfigError(
            f"model.options.depth: must be {3 * per_layer}n + 4 "
            f"{'with' if bottleneck else 'without'} bottleneck. Received: {depth}"
        )
    return ((depth - 4) // (3 * per_layer),) * 3


def check_densenet_cifar(image_size, *, depth, bottleneck, compression, **others):
    """Raises ConfigError for model.options that `build_densenet_cifar` cannot build;
    returns the network's stage numbers."""
    blocks = _cifar_blocks(depth, bottleneck)
    return check_densenet(image_size, blocks=blocks, compression=compression, stem="cifar")


def build_densenet_cifar(
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    *,
    depth=100,
    growth_rate=12,
    bottleneck=True,
    compression=0.5,
):
    """DenseNet in the CIFAR layout: three dense blocks of (depth - 4) / 3 convolutions
    each (counting a bottleneck layer as two), a 3x3 stem of 2k channels (16 without
    bottleneck). The defaults are DenseNet-BC-100, k = 12."""
    return build_densenet(
        num_classes,
        input_shape,
        attention,
        sync_bn,
        dropout,
        blocks=_cifar_blocks(depth, bottleneck),
        growth_rate=growth_rate,
        init_filters=2 * growth_rate if bottleneck else 16,
        bottleneck=bottleneck,
        compression=compression,
        stem="cifar",
        name=f"densenet_cifar{depth}_k{growth_rate}",
    )


register_model(
    "densenet_cifar",
    build_densenet_cifar,
    input_size=32,
    num_classes=10,
    check=check_densenet_cifar,
)
