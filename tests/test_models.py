"""Every registered model, tested from the registry; exact counts of the paper's networks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sectrain.models import MODELS, build_model
from sectrain.models.profile import count_flops, count_parameters

SE = {"kind": "se", "ratio": 16}
SMALL = [n for n in MODELS.names() if n.startswith("cifar_") and n != "cifar_resnet110"] + [
    "resnet18"
]


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("attention", [None, SE], ids=["plain", "se"])
def test_builds_with_unique_layer_names_and_right_output(name, attention):
    model = build_model(name, num_classes=7, input_shape=(32, 32, 3), attention=attention)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert model.output.shape == (None, 7)
    has_se = any(n.endswith("_se") for n in names)
    assert has_se == (attention is not None)


@pytest.mark.parametrize("name", SMALL)
def test_one_training_step_is_finite_and_changes_weights(name):
    keras.utils.set_random_seed(0)
    model = build_model(name, num_classes=5, input_shape=(32, 32, 3), attention=SE)
    optimizer = keras.optimizers.SGD(0.01)
    x = tf.random.normal((4, 32, 32, 3))
    y = tf.constant([0, 1, 2, 3])
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(
                y, model(x, training=True), from_logits=True
            )
        )
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    assert np.isfinite(loss.numpy())
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize(
    "name, attention, trainable",
    [
        ("resnet50", None, 25_557_032),  # PAPER.md: torchvision / Caffe layout
        ("resnet50", SE, 28_088_024),
        ("resnet50", {**SE, "use_bias": False}, 25_557_032 + 2_514_944),
    ],
)
def test_resnet50_trainable_parameters_match_the_paper_exactly(name, attention, trainable):
    model = build_model(name, num_classes=1000, input_shape=(224, 224, 3), attention=attention)
    counted, total = count_parameters(model)
    assert counted == trainable
    assert total - counted == 53_120  # batch-norm moving means and variances


@pytest.mark.parametrize(
    "name, millions",
    [("resnet18", 11.78), ("resnet34", 21.96), ("resnet101", 49.33), ("resnet152", 66.82)],
)
def test_se_resnet_parameters_match_published_rounded_counts(name, millions):
    model = build_model(name, num_classes=1000, input_shape=(224, 224, 3), attention=SE)
    assert round(count_parameters(model)[0] / 1e6, 2) == millions


def se_parameters(widths_and_units, ratio=16):
    """The SE blocks' parameters by formula: per unit of C channels, 2 C^2/r + C/r + C."""
    return sum(n * (2 * c * (c // ratio) + c // ratio + c) for c, n in widths_and_units)


@pytest.mark.parametrize(
    "name, widths_and_units",
    [
        ("resnet50", [(256, 3), (512, 4), (1024, 6), (2048, 3)]),
        ("cifar_resnet56", [(16, 9), (32, 9), (64, 9)]),
    ],
)
def test_se_parameter_delta_equals_its_formula(name, widths_and_units):
    shape = (32, 32, 3)
    plain = count_parameters(build_model(name, num_classes=10, input_shape=shape))[0]
    se = count_parameters(build_model(name, num_classes=10, input_shape=shape, attention=SE))[0]
    assert se - plain == se_parameters(widths_and_units)


def test_cifar_resnets_have_he_et_al_sizes():
    # He et al. 2015, Table 6: ResNet-20 0.27M, ResNet-110 1.7M parameters
    sizes = {
        d: count_parameters(
            build_model(f"cifar_resnet{d}", num_classes=10, input_shape=(32, 32, 3))
        )[0]
        for d in (20, 110)
    }
    assert round(sizes[20] / 1e6, 2) == 0.27
    assert round(sizes[110] / 1e6, 1) == 1.7


def test_resnet50_flops_match_table_2():
    plain = count_flops(build_model("resnet50", num_classes=1000, input_shape=(224, 224, 3)))
    se = count_flops(
        build_model("resnet50", num_classes=1000, input_shape=(224, 224, 3), attention=SE)
    )
    assert (round(plain / 1e9, 2), round(se / 1e9, 2)) == (3.86, 3.87)


def test_stages_and_placement_select_where_attention_goes():
    def se_layers(**attention):
        model = build_model(
            "resnet50", num_classes=10, input_shape=(64, 64, 3), attention={**SE, **attention}
        )
        return [layer for layer in model.layers if layer.name.endswith("_se")]

    assert {layer.name[:5] for layer in se_layers(stages=[4])} == {"conv4"}
    assert len(se_layers(stages=[2, 5])) == 6
    identity = se_layers(placement="identity")
    assert len(identity) == 16 and all("_identity_" in layer.name for layer in identity)
    # pre-placement acts on the unit's input: conv2_block1 sees the 64-channel stem output
    assert se_layers(placement="pre")[0].input.shape[-1] == 64


def test_cifar_shortcuts_are_parameter_free():
    model = build_model("cifar_resnet20", num_classes=10, input_shape=(32, 32, 3))
    assert not [layer for layer in model.layers if layer.name.endswith("_0_conv")]
    pads = [layer for layer in model.layers if layer.name.endswith("_0_pad")]
    assert [p.output.shape[1:] for p in pads] == [(16, 16, 32), (8, 8, 64)]
    assert all(math.prod(p.output.shape[1:]) for p in pads)
