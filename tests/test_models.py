"""Every registered model, tested from the registry, and the published counts of each family.

A new registration is covered by the parametrised tests without new test code.
"""

import itertools
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linprog

from sectrain.errors import ConfigError
from sectrain.layers.attention import ATTENTION_LAYERS, SqueezeExcite
from sectrain.layers.common import ChannelShuffle, ShakeShake
from sectrain.models import MODELS, build_model
from sectrain.models.profile import count_flops, count_parameters

SE = {"kind": "se", "ratio": 16}
TRAIN_STEP_LIMIT = 8e6  # larger models are built and counted, not trained, in the suite
SAVE_LIMIT = 5e6  # and only small ones are written to disk and loaded back


def small_input(name):
    spec = MODELS.get(name)
    return (max(spec.min_size, 32), max(spec.min_size, 32), 3)


def built(name, attention=None, num_classes=10, input_shape=None):
    keras.backend.clear_session()
    shape = input_shape or small_input(name)
    return build_model(name, num_classes=num_classes, input_shape=shape, attention=attention)


# Over 40M parameters with SE: slow to build twice; their counts are tested below anyway.
LARGE = {"resnet101", "resnet152", "preact_resnet101", "preact_resnet152", "resnext101_32x4d"}
LARGE |= {"senet154", "inception_resnet_v2"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in MODELS.names()]
)
def test_model_builds_plain_and_with_se_and_trains_where_small(name, tmp_path):
    plain = built(name)
    assert not [layer for layer in plain.layers if isinstance(layer, SqueezeExcite)]
    model = built(name, SE)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names)), "layer names must be unique"
    assert model.output.shape == (None, 10)
    se_layers = [layer for layer in model.layers if isinstance(layer, SqueezeExcite)]
    assert se_layers

    # The SE blocks add exactly their formula's parameters: 2 C (C // r) + C // r + C each.
    added = sum(2 * c * (c // 16) + c // 16 + c for c in (s.input.shape[-1] for s in se_layers))
    assert count_parameters(model)[0] - count_parameters(plain)[0] == added

    if count_parameters(model)[0] > TRAIN_STEP_LIMIT:
        return
    keras.utils.set_random_seed(0)
    x = tf.random.normal((2, *small_input(name)))
    y = tf.constant([1, 2])
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )
    keras.optimizers.SGD(0.01).apply(
        tape.gradient(loss, model.trainable_variables), model.trainable_variables
    )
    assert np.isfinite(loss.numpy())
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))

    if count_parameters(model)[0] > SAVE_LIMIT:
        return
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        loaded(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-5
    )


# keras.applications count_params() (BN statistics included), from PAPER.md
KERAS_APPLICATIONS = {
    "inception_v3": 23_851_784,
    "inception_resnet_v2": 55_873_736,
    "mobilenet": 4_253_864,
    "mobilenet_v2": 3_538_984,
    "densenet121": 8_062_504,
    "densenet169": 14_307_880,
    "densenet201": 20_242_984,
}


@pytest.mark.parametrize("name, total", KERAS_APPLICATIONS.items())
def test_plain_network_has_the_keras_applications_parameter_count(name, total):
    assert built(name, num_classes=1000).count_params() == total


# Trainable parameters of the paper's layout (no conv bias), as torchvision counts them
PAPER_LAYOUT = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x4d": 44_177_704,
}


@pytest.mark.parametrize(
    "name, keras_total, bn_trainable",
    [("vgg16", 138_357_544, 138_365_992), ("vgg19", 143_667_240, 143_678_248)],
)
def test_vgg_has_the_keras_applications_and_torchvision_counts(name, keras_total, bn_trainable):
    # VGG's classifier flattens 7x7 maps: its size depends on the input, counted at 224
    shape = (224, 224, 3)
    keras.backend.clear_session()
    plain = build_model(name, num_classes=1000, input_shape=shape, batch_norm=False)
    assert plain.count_params() == keras_total  # keras.applications VGG16 / VGG19
    keras.backend.clear_session()
    with_bn = build_model(name, num_classes=1000, input_shape=shape)
    assert count_parameters(with_bn)[0] == bn_trainable  # torchvision vgg16_bn / vgg19_bn


@pytest.mark.parametrize("name, trainable", PAPER_LAYOUT.items())
def test_plain_resnets_have_the_paper_layout_trainable_count(name, trainable):
    assert count_parameters(built(name, num_classes=1000))[0] == trainable


# With SE (r = 16), in millions, as printed by the paper (Tables 2, 3) and the public
# reference implementations (SE-ResNet-18/34, SE-ResNeXt, SENet-154)
SE_MILLIONS = {
    "resnet18": 11.78,
    "resnet34": 21.96,
    "resnet50": 28.09,
    "resnet101": 49.33,
    "resnet152": 66.82,
    "resnext50_32x4d": 27.56,
    "resnext101_32x4d": 48.96,
    "senet154": 115.09,
    "mobilenet": 4.72,
}


@pytest.mark.parametrize("name, millions", SE_MILLIONS.items())
def test_se_networks_have_the_published_parameter_counts(name, millions):
    assert round(count_parameters(built(name, SE, num_classes=1000))[0] / 1e6, 2) == millions


def test_se_resnet50_matches_the_paper_exactly():
    model = built("resnet50", SE, num_classes=1000)
    trainable, total = count_parameters(model)
    assert trainable == 28_088_024
    assert total - trainable == 53_120  # batch-norm moving means and variances
    no_bias = built("resnet50", {**SE, "use_bias": False}, num_classes=1000)
    assert count_parameters(no_bias)[0] == 25_557_032 + 2_514_944


def up_to_tenth(count):
    """Table 10 and 11 print millions rounded up to a tenth."""
    return math.ceil(count / 1e5) / 10


@pytest.mark.parametrize(
    "attention, millions",
    [
        ({"ratio": 2}, 45.7),
        ({"ratio": 4}, 35.7),
        ({"ratio": 8}, 30.7),
        ({"ratio": 32}, 26.9),
        ({"stages": [2]}, 25.6),
        ({"stages": [3]}, 25.7),
        ({"stages": [4]}, 26.4),
    ],
)
def test_se_resnet50_ablation_sizes_match_tables_10_and_13(attention, millions):
    model = built("resnet50", {**SE, **attention}, num_classes=1000)
    assert up_to_tenth(count_parameters(model)[0]) == millions


@pytest.mark.parametrize(
    "attention, gflops, millions",
    [
        ({"placement": "3x3"}, 3.86, 25.8),  # Table 15, SE 3x3
        ({"squeeze": "none"}, 4.27, 28.1),  # Table 16, NoSqueeze: FCs at every position
    ],
)
def test_se_3x3_and_nosqueeze_match_tables_15_and_16(attention, gflops, millions):
    model = built("resnet50", {**SE, **attention}, 1000, (224, 224, 3))
    assert round(count_flops(model) / 1e9, 2) == gflops
    assert up_to_tenth(count_parameters(model)[0]) == millions


@pytest.mark.parametrize(
    "name, attention, printed",
    [
        ("resnet50", None, 3.86),
        ("resnet50", SE, 3.87),
        ("mobilenet", None, 0.569),
        ("mobilenet", SE, 0.572),
        ("vgg16", None, 15.47),
        ("vgg16", SE, 15.48),
        ("bn_inception", None, 2.03),
    ],
)
def test_flops_match_the_paper_at_its_precision(name, attention, printed):
    digits = len(str(printed).split(".")[1])
    flops = count_flops(built(name, attention, 1000, (224, 224, 3)))
    assert round(flops / 1e9, digits) == printed


@pytest.mark.parametrize(
    "name, attention, paper",
    [
        ("resnet101", None, 7.58),
        ("resnet152", None, 11.30),
        ("resnext50_32x4d", None, 4.24),
        ("bn_inception", SE, 2.04),
    ],
)
def test_flops_of_other_rows_are_within_half_a_percent_of_the_paper(name, attention, paper):
    flops = count_flops(built(name, attention, 1000, (224, 224, 3))) / 1e9
    assert abs(flops - paper) / paper < 0.005


def elementwise_work(model):
    """What a FLOP counter could add to the multiply-adds of convolutions and dense
    layers, per image: residual additions, batch-norm outputs, ReLU outputs, max-pool
    comparisons and average-pool additions."""
    work = dict.fromkeys(("add", "batch_norm", "relu", "max_pool", "avg_pool"), 0)
    for layer in model.layers:
        outputs = math.prod(layer.output.shape[1:])
        if isinstance(layer, keras.layers.Add):
            work["add"] += outputs
        elif isinstance(layer, keras.layers.BatchNormalization):
            work["batch_norm"] += outputs
        elif getattr(layer, "activation", None) is keras.activations.relu:
            work["relu"] += outputs
        elif isinstance(layer, keras.layers.MaxPooling2D):
            work["max_pool"] += outputs * math.prod(layer.pool_size)
        elif isinstance(layer, keras.layers.AveragePooling2D):
            work["avg_pool"] += outputs * math.prod(layer.pool_size)
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            work["avg_pool"] += math.prod(layer.input.shape[1:])
    return work


def test_no_cost_per_elementwise_operation_gives_the_papers_flops_of_three_networks():
    """The README's reason for the rows below the paper's: no non-negative cost per
    addition, batch-norm output, ReLU output and pooling step, added to the counted
    multiply-adds, makes ResNet-50, ResNeXt-101 and VGG-16 all round to the paper's
    figures, while any two of them can be fit (a linear program over the built graphs)."""
    bounds_of = {}  # model -> the inequalities `work . cost < high`, `-work . cost <= -low`
    for name, printed in (("resnet50", 3.86), ("resnext101_32x4d", 7.99), ("vgg16", 15.47)):
        model = built(name, None, 1000, (224, 224, 3))
        census = elementwise_work(model)
        assert census["relu"] and census["batch_norm"] and census["max_pool"]
        if name == "resnet50":  # one sum per unit: 3 units at 56x56x256, then 4, 6 and 3
            sums = 3 * 56**2 * 256 + 4 * 28**2 * 512 + 6 * 14**2 * 1024 + 3 * 7**2 * 2048
            assert census["add"] == sums
        work, counted = np.array(list(census.values())) / 1e9, count_flops(model) / 1e9
        # what the added work may be for the total to round to `printed`
        low, high = printed - 0.005 - counted, printed + 0.005 - counted - 1e-9
        bounds_of[name] = ([work, -work], [high, -low])

    def solvable(names):
        rows = [row for name in names for row in bounds_of[name][0]]
        limits = [limit for name in names for limit in bounds_of[name][1]]
        return linprog(np.zeros(5), A_ub=rows, b_ub=limits, bounds=(0, None)).status == 0

    assert all(solvable(pair) for pair in itertools.combinations(bounds_of, 2))
    assert not solvable(bounds_of)


def test_shufflenet_has_the_official_implementations_sizes():
    shape = (224, 224, 3)
    # megvii-model/ShuffleNet-Series: 1x, 138 MFLOPs with 1.9M (g = 3) and 2.4M (g = 8)
    for groups, millions in ((3, 1.9), (8, 2.4)):
        keras.backend.clear_session()
        model = build_model("shufflenet", num_classes=1000, input_shape=shape, groups=groups)
        assert round(count_parameters(model)[0] / 1e6, 1) == millions
        assert abs(count_flops(model) / 138e6 - 1) < 0.005
    # the SE paper's Table 3: SE adds 0.6M (1.8M -> 2.4M) and 2 MFLOPs (140 -> 142)
    plain = built("shufflenet", None, 1000, shape)
    se = built("shufflenet", SE, 1000, shape)
    assert round((count_parameters(se)[0] - count_parameters(plain)[0]) / 1e6, 1) == 0.6
    assert round((count_flops(se) - count_flops(plain)) / 1e6) == 2


def test_channel_shuffle_interleaves_the_groups():
    x = np.arange(6, dtype="float32").reshape(1, 1, 1, 6)  # groups [0 1 2] [3 4 5]
    shuffled = ChannelShuffle(2)(x)
    np.testing.assert_array_equal(np.ravel(shuffled), [0, 3, 1, 4, 2, 5])
    assert ChannelShuffle.from_config(ChannelShuffle(2).get_config()).groups == 2


@pytest.mark.parametrize(
    "name, millions",
    [
        ("preact_resnet164", 1.70),  # He et al. 2016
        ("wrn", 10.96),  # WRN-16-8, Zagoruyko and Komodakis: 11.0M
        ("densenet_cifar", 0.77),  # DenseNet-BC-100, k = 12: 0.8M
        ("cifar_resnet20", 0.27),
        ("cifar_resnet110", 1.73),
        ("cifar_resnext29_8x64d", 34.43),  # Xie et al.: 34.4M
        ("shake_shake26_2x96d", 26.19),  # Gastaldi 2017: 26.2M
        # two branches of 4 x 64d are ResNeXt-29 8x64d (Xie et al.: 34.4M, 10 classes)
        ("shake_even29_2x4x64d", 34.44),
    ],
)
def test_cifar_networks_have_their_papers_sizes(name, millions):
    assert round(count_parameters(built(name, input_shape=(32, 32, 3)))[0] / 1e6, 2) == millions


def test_stages_and_placement_select_where_attention_goes():
    def se_layers(name="resnet50", **attention):
        model = built(name, {**SE, **attention})
        return [layer for layer in model.layers if isinstance(layer, SqueezeExcite)]

    assert {layer.name[:5] for layer in se_layers(stages=[4])} == {"conv4"}
    assert len(se_layers(stages=[2, 5])) == 6
    identity = se_layers(placement="identity")
    assert len(identity) == 16 and all("_identity_" in layer.name for layer in identity)
    # pre-placement acts on the unit's input: conv2_block1 sees the 64-channel stem output
    assert se_layers(placement="pre")[0].input.shape[-1] == 64
    post = se_layers(placement="post")
    assert len(post) == 16 and all(layer.name.endswith("_post_se") for layer in post)
    assert len(se_layers("inception_resnet_v2", placement="identity", stages=[5])) == 10
    # BN-Inception: on each module's output, by the size it works at (3c and 4e reduce)
    modules = [layer.name for layer in se_layers("bn_inception", stages=[4])]
    assert modules == [f"inception_{m}_se" for m in ("3c", "4a", "4b", "4c", "4d")]
    assert len(se_layers("vgg16", stages=[1, 5])) == 5  # after each convolution: 2 + 3
    on_3x3 = se_layers(placement="3x3")
    assert len(on_3x3) == 16 and on_3x3[0].input.shape[-1] == 64  # the 3x3's width


@pytest.mark.parametrize("kind", ATTENTION_LAYERS.names())
def test_every_attention_kind_builds_into_every_family(kind):
    for name in ("cifar_resnet20", "densenet_cifar", "mobilenet"):
        model = built(name, {"kind": kind, "ratio": 4})
        kinds = [layer for layer in model.layers if isinstance(layer, ATTENTION_LAYERS.get(kind))]
        assert kinds and model.output.shape == (None, 10)


def test_cifar_shortcuts_are_parameter_free():
    model = built("cifar_resnet20", input_shape=(32, 32, 3))
    assert not [layer for layer in model.layers if layer.name.endswith("_0_conv")]
    pads = [layer for layer in model.layers if layer.name.endswith("_0_pad")]
    assert [p.output.shape[1:] for p in pads] == [(16, 16, 32), (8, 8, 64)]


def test_senet154_has_the_appendix_changes():
    model = built("senet154", SE, input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    assert {"conv1_1_conv", "conv1_2_conv", "conv1_3_conv"} <= names  # three 3x3 stem convs
    first = model.get_layer("conv2_block1_1_conv")
    middle = model.get_layer("conv2_block1_2_conv")
    assert first.filters * 2 == middle.filters == 256  # the first 1x1 is halved
    assert model.get_layer("conv3_block1_0_conv").kernel_size == (3, 3)  # stride-2 projection
    assert model.get_layer("conv2_block1_0_conv").kernel_size == (1, 1)


def test_a_resnet_architecture_is_set_by_its_options():
    keras.backend.clear_session()
    custom = build_model(
        "cifar_resnet20", num_classes=10, input_shape=(32, 32, 3), depths=[1, 2], planes=[8, 16]
    )
    units = [layer.name for layer in custom.layers if layer.name.endswith("_add")]
    assert units == ["conv2_block1_add", "conv3_block1_add", "conv3_block2_add"]
    assert custom.get_layer("conv3_block2_2_conv").filters == 16
    # torchvision's ResNet-50 "v1.5": the stride on the 3x3, 4.09 GFLOPs, same parameters
    keras.backend.clear_session()
    v1_5 = build_model("resnet50", num_classes=1000, input_shape=(224, 224, 3), stride_on_3x3=True)
    assert round(count_flops(v1_5) / 1e9, 2) == 4.09
    assert count_parameters(v1_5)[0] == PAPER_LAYOUT["resnet50"]


@pytest.mark.parametrize(
    "name, unit_input, unit_output",
    [
        ("cifar_resnet20", "conv2_block1_out", "conv2_block2_out"),
        ("resnext50_32x4d", "conv3_block1_out", "conv3_block2_out"),
        ("shufflenet", "stage3_unit1_relu", "stage3_unit2_relu"),
        ("mobilenet_v2", "unit2_se", "unit3_add"),
    ],
)
def test_zero_init_last_starts_each_added_branch_at_zero(name, unit_input, unit_output):
    keras.backend.clear_session()
    shape = small_input(name)
    model = build_model(name, num_classes=10, input_shape=shape, attention=SE, zero_init_last=True)
    probe = keras.Model(
        model.input, [model.get_layer(unit_input).output, model.get_layer(unit_output).output]
    )
    images = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    before, after = (np.asarray(t) for t in probe(images, training=True))
    # the unit passes its input on unchanged (ReLU of a ReLU output is itself) ...
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert np.abs(before).max() > 0
    # ... while the first unit of a stage, without an addition, keeps its branch
    if name == "shufflenet":
        assert model.get_layer("stage3_unit1_2_bn").gamma.numpy().min() == 1
    # and one training step moves the zeroed scales
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.train_on_batch(images, np.array([0, 1]))
    gammas = [layer.gamma.numpy() for layer in model.layers if layer.name.endswith("_bn")]
    assert all(np.isfinite(g).all() for g in gammas)
    assert any(g.min() != 1 and np.abs(g).max() > 0 for g in gammas)


def test_zero_init_last_is_refused_for_pre_activation_units():
    with pytest.raises(ConfigError, match="zero_init_last: a pre-activation unit ends"):
        build_model("preact_resnet18", num_classes=10, input_shape=(32, 32, 3), zero_init_last=True)


def test_build_model_checks_options_as_the_command_line_does():
    with pytest.raises(ConfigError, match="model.options.block: unknown value 'bottlenek'"):
        build_model("resnet18", num_classes=10, input_shape=(32, 32, 3), block="bottlenek")
    with pytest.raises(ConfigError, match="resnet18 has no option 'depth'"):
        build_model("resnet18", num_classes=10, input_shape=(32, 32, 3), depth=18)


def test_a_densenet_architecture_is_set_by_its_options():
    model = build_model(
        "densenet121", num_classes=10, input_shape=(32, 32, 3), blocks=[1, 2], growth_rate=8
    )
    concats = [layer.name for layer in model.layers if layer.name.endswith("_concat")]
    assert concats == ["conv2_block1_concat", "conv3_block1_concat", "conv3_block2_concat"]
    assert model.get_layer("conv3_block2_2_conv").filters == 8


def test_the_readme_keras_example_builds_what_it_says():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### In Keras code", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    keras.backend.clear_session()
    names = {}
    exec(code, names)
    assert count_parameters(names["model"])[0] == 28_088_024  # SE-ResNet-50, as the paper
    custom = names["custom"]
    units = [layer.name for layer in custom.layers if layer.name.endswith("_add")]
    assert len(units) == 8 and sum(layer.name.endswith("_se") for layer in custom.layers) == 4
    assert names["outputs"].shape == (None, 32, 32, 64)


@pytest.mark.parametrize("backward", ["shake", "even", "keep"])
def test_shake_shake_mixes_forward_and_backward_as_configured(backward):
    rng = np.random.default_rng(0)
    a = tf.constant(rng.normal(size=(8, 2, 2, 3)).astype("float32"))
    b = tf.constant(rng.normal(size=(8, 2, 2, 3)).astype("float32"))
    layer = ShakeShake("shake", backward, seed=1)
    np.testing.assert_allclose(layer([a, b], training=False), 0.5 * (a + b), rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = layer([a, b], training=True)
        loss = tf.reduce_sum(out)
    # one alpha per image, in [0, 1): out = alpha a + (1 - alpha) b
    alpha = ((out - b) / (a - b)).numpy().reshape(8, -1)
    np.testing.assert_allclose(alpha, alpha[:, :1].repeat(alpha.shape[1], 1), atol=1e-4)
    assert ((alpha >= 0) & (alpha < 1)).all() and alpha[:, 0].std() > 0.05
    beta = tape.gradient(loss, a).numpy().reshape(8, -1)[:, 0]
    if backward == "even":
        np.testing.assert_allclose(beta, 0.5)
    elif backward == "keep":
        np.testing.assert_allclose(beta, alpha[:, 0], atol=1e-4)
    else:  # drawn anew
        assert ((beta >= 0) & (beta < 1)).all() and np.abs(beta - alpha[:, 0]).max() > 0.05
    config = ShakeShake.from_config(layer.get_config()).get_config()
    assert (config["forward"], config["backward"], config["seed"]) == ("shake", backward, 1)


def test_shake_shake_networks_have_the_shake_shake_papers_parts(tmp_path):
    model = built("shake_shake26_2x96d", SE)
    shakes = [layer for layer in model.layers if isinstance(layer, ShakeShake)]
    assert len(shakes) == 12 and {(s.forward_mode, s.backward_mode) for s in shakes} == {
        ("shake", "shake")
    }
    assert model.get_layer("conv4_block4_branch2_2_conv").filters == 384
    # the SE block acts on the shaken residual, before the addition
    assert model.get_layer("conv2_block1_se").input is shakes[0].output
    # and the residual families' other placements apply as well
    for placement, count, suffix in (("identity", 12, "_identity_se"), ("post", 12, "_post_se")):
        placed = built("shake_shake26_2x96d", {**SE, "placement": placement})
        names = [layer.name for layer in placed.layers if isinstance(layer, SqueezeExcite)]
        assert len(names) == count and all(n.endswith(suffix) for n in names)
    on_3x3 = built("shake_shake26_2x96d", {**SE, "placement": "3x3"}).get_layer(
        "conv2_block1_branch2_3x3_se"
    )
    assert on_3x3.input.shape[-1] == 96
    pre = built("shake_shake26_2x96d", {**SE, "placement": "pre"})
    assert pre.get_layer("conv2_block1_pre_se").input.shape[-1] == 16  # the stem's width
    even = built("shake_even29_2x4x64d")
    assert {layer.backward_mode for layer in even.layers if isinstance(layer, ShakeShake)} == {
        "even"
    }
    middle = even.get_layer("conv4_block3_branch1_2_conv")
    assert (middle.filters, middle.groups) == (1024, 4)
    assert even.get_layer("conv4_block3_branch1_3_conv").filters == 1024
    # a small one survives saving and loading, shake settings included
    keras.backend.clear_session()
    small = build_model(
        "shake_even29_2x4x64d", num_classes=10, input_shape=(32, 32, 3), depth=11, width=4
    )
    small.save(tmp_path / "shake.keras")
    loaded = keras.models.load_model(tmp_path / "shake.keras")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images), small(images), rtol=1e-5, atol=1e-5)
    assert loaded.get_layer("conv2_block1_shake").backward_mode == "even"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"depth": 27}, r"model.options.depth: a basic network has 6n \+ 2 layers"),
        ({"groups": 4}, "model.options.groups: basic branches have no grouped convolution"),
        ({"width": 7}, "model.options.width: must be even"),
        ({"forward": "keep"}, "model.options.forward: unknown value 'keep'"),
    ],
)
def test_shake_shake_options_it_cannot_build_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        build_model("shake_shake26_2x96d", num_classes=10, input_shape=(32, 32, 3), **options)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_shake_shake_draws_in_the_compute_dtype_under_mixed_precision(policy):
    layer = ShakeShake(dtype=policy)
    a, b = tf.ones((4, 2, 2, 3)), tf.zeros((4, 2, 2, 3))
    out = layer([a, b], training=True)  # alpha itself, per image
    assert out.dtype == layer.compute_dtype != "float32"
    alpha = out.numpy().astype("float32")
    assert ((alpha >= 0) & (alpha <= 1)).all() and alpha.std() > 0
