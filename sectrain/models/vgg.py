"""VGG (Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", 2015, https://arxiv.org/abs/1409.1556) with batch norm after each
convolution, as the SE paper trains VGG-16 (Table 2), and an attention block after the
activation of each convolution.

Without batch norm and attention, VGG-16 and VGG-19 have the architecture and exact
parameter counts of keras.applications' VGG16 and VGG19 at 224x224; with batch norm,
torchvision's vgg16_bn and vgg19_bn. Stages are VGG's five blocks (1-5), each ending in
a 2x2 max-pool: block n works at output stride 2^(n-1).
"""

import functools

from sectrain.errors import ConfigError
from sectrain.lazy import lazy_import
from sectrain.models.registry import register_model

keras = lazy_import("keras")
attention_layers = lazy_import("sectrain.layers.attention")
common = lazy_import("sectrain.layers.common")

WIDTHS = (64, 128, 256, 512, 512)
DEPTHS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


def check_vgg(image_size, *, depths, **others):
    """Raises ConfigError unless there is a depth for each of VGG's five blocks; returns
    the stage numbers."""
    if len(depths) != len(WIDTHS):
        raise ConfigError(
            f"model.options.depths: give the convolutions of each of VGG's {len(WIDTHS)} "
            f"blocks. Received: {list(depths)}"
        )
    return range(1, len(WIDTHS) + 1)


def build_vgg(
    num_classes,
    input_shape,
    attention=None,
    sync_bn=False,
    dropout=0.0,
    *,
    depths=DEPTHS[16],
    batch_norm=True,
    fc_width=4096,
    name="vgg",
):
    """Builds a VGG network.

    Args:
        num_classes, input_shape, attention, sync_bn: as for every model.
        dropout: float, dropout rate after each of the two hidden fully connected layers
            (VGG trains with 0.5).
        depths: tuple of int, 3x3 convolutions in each of the five blocks.
        batch_norm: bool, batch norm between each convolution and its ReLU.
        fc_width: int, units of the two hidden fully connected layers (smaller ones are
            common on CIFAR).
        name: str, the model's name.
    """
    plan = attention_layers.AttentionPlan(attention)
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for stage, (depth, width) in enumerate(zip(depths, WIDTHS), start=1):
        for i in range(1, depth + 1):
            layer_name = f"block{stage}_conv{i}"
            # the convolutions keep their bias, as in VGG, keras.applications and torchvision
            x = common.conv(width, 3, name=layer_name, use_bias=True)(x)
            if batch_norm:
                x = common.batch_norm(f"{layer_name}_bn", sync_bn)(x)
            x = keras.layers.Activation("relu", name=f"{layer_name}_relu")(x)
            x = plan.apply(x, layer_name, stage)
        x = keras.layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for fc in ("fc1", "fc2"):
        x = keras.layers.Dense(fc_width, activation="relu", name=fc)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    return keras.Model(inputs, common.logits(x, num_classes), name=name)


for _depth, _depths in DEPTHS.items():
    # the architecture's arguments stay open as model.options, with these defaults
    _build = functools.partial(build_vgg, depths=_depths, name=f"vgg{_depth}")
    register_model(f"vgg{_depth}", _build, check=check_vgg)
