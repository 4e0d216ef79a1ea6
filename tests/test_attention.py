"""The SqueezeExcite layer: shapes, widths, gate formulas, serialisation."""

import keras
import numpy as np
import pytest

from sectrain.layers.attention import (
    GATES,
    ChannelSpatialSqueezeExcite,
    EfficientChannelAttention,
    SpatialSqueezeExcite,
    SqueezeExcite,
    unused_settings,
)


def excitation(layer, x):
    """The gates computed by hand from the layer's own weights."""
    pooled = {
        "avg": x.mean(axis=(1, 2), keepdims=True),
        "max": x.max(axis=(1, 2), keepdims=True),
        "none": x,  # NoSqueeze: the FC layers act at every position
    }[layer.squeeze]
    hidden = np.maximum(pooled @ layer.reduce.kernel.numpy() + layer.reduce.bias.numpy(), 0)
    z = hidden @ layer.expand.kernel.numpy() + layer.expand.bias.numpy()
    gate = {
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "hard_sigmoid": lambda v: np.clip(v + 3, 0, 6) / 6,
        "tanh": np.tanh,
        "relu": lambda v: np.maximum(v, 0),
    }[layer.gate]
    return gate(z)


@pytest.mark.parametrize("squeeze", ["avg", "max", "none"])
@pytest.mark.parametrize("gate", GATES)
def test_output_is_input_times_documented_gate(squeeze, gate):
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 32)).astype("float32")
    layer = SqueezeExcite(ratio=4, squeeze=squeeze, gate=gate)
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y, x * excitation(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "channels, ratio, min_channels, reduced", [(256, 16, 1, 16), (32, 16, 1, 2), (32, 16, 8, 8)]
)
def test_reduced_width_is_channels_over_ratio_at_least_min(channels, ratio, min_channels, reduced):
    layer = SqueezeExcite(ratio=ratio, min_channels=min_channels)
    layer.build((None, 4, 4, channels))
    assert layer.reduce.kernel.shape == (channels, reduced)
    # parameters: two FC layers with biases, 2 C C/r + C/r + C
    assert layer.count_params() == 2 * channels * reduced + reduced + channels


def test_without_bias_the_fc_layers_have_only_kernels():
    layer = SqueezeExcite(ratio=16, use_bias=False)
    layer.build((None, 4, 4, 256))
    assert layer.count_params() == 2 * 256 * 16


@pytest.mark.parametrize(
    "arguments, message",
    [({"ratio": 0}, "ratio"), ({"squeeze": "mean"}, "squeeze"), ({"gate": "swish"}, "gate")],
)
def test_invalid_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        SqueezeExcite(**arguments)


def test_get_config_returns_constructor_arguments_and_round_trips():
    layer = SqueezeExcite(ratio=8, min_channels=4, squeeze="max", gate="tanh", use_bias=False)
    config = layer.get_config()
    assert {k: config[k] for k in ("ratio", "min_channels", "squeeze", "gate", "use_bias")} == {
        "ratio": 8,
        "min_channels": 4,
        "squeeze": "max",
        "gate": "tanh",
        "use_bias": False,
    }
    assert SqueezeExcite.from_config(config).get_config() == config


@pytest.mark.parametrize("squeeze", ["avg", "none"])
def test_saved_model_loads_without_custom_objects_and_gives_same_outputs(squeeze, tmp_path):
    inputs = keras.Input((6, 6, 16))
    outputs = SqueezeExcite(ratio=4, squeeze=squeeze, gate="hard_sigmoid", name="se")(
        keras.layers.Conv2D(16, 3)(inputs)
    )
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 16)).astype("float32")
    model.save(tmp_path / "se.keras")
    loaded = keras.saving.load_model(tmp_path / "se.keras")
    assert isinstance(loaded.get_layer("se"), SqueezeExcite)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_spatial_se_gates_each_position_by_a_1x1_projection():
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 8)).astype("float32")
    layer = SpatialSqueezeExcite()
    y = keras.ops.convert_to_numpy(layer(x))
    kernel = layer.project.kernel.numpy().reshape(8, 1)
    gate = sigmoid(x @ kernel + layer.project.bias.numpy())
    np.testing.assert_allclose(y, x * gate, rtol=1e-5, atol=1e-6)
    assert layer.count_params() == 8 + 1


def test_scse_is_the_sum_of_channel_and_spatial_excitation():
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 32)).astype("float32")
    layer = ChannelSpatialSqueezeExcite(ratio=4)
    y = keras.ops.convert_to_numpy(layer(x))
    spatial = keras.ops.convert_to_numpy(layer.spatial(x))
    np.testing.assert_allclose(y, x * excitation(layer, x) + spatial, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels, kernel", [(16, 3), (64, 3), (256, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_size_adapts_to_channels_as_in_the_paper(channels, kernel):
    assert EfficientChannelAttention().adaptive_kernel_size(channels) == kernel
    assert EfficientChannelAttention(kernel_size=9).adaptive_kernel_size(channels) == 9


def test_eca_gates_channels_by_a_1d_convolution_of_the_pooled_map():
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 16)).astype("float32")
    layer = EfficientChannelAttention()
    y = keras.ops.convert_to_numpy(layer(x))
    weights = layer.conv.kernel.numpy().ravel()  # (3,): channels c-1, c, c+1
    pooled = np.pad(x.mean(axis=(1, 2)), ((0, 0), (1, 1)))
    z = sum(weights[i] * pooled[:, i : i + 16] for i in range(3))
    np.testing.assert_allclose(y, x * sigmoid(z)[:, None, None, :], rtol=1e-5, atol=1e-6)
    assert layer.count_params() == 3


@pytest.mark.parametrize(
    "layer",
    [
        SpatialSqueezeExcite(),
        ChannelSpatialSqueezeExcite(ratio=8, gate="tanh"),
        EfficientChannelAttention(5),
    ],
    ids=["sse", "scse", "eca"],
)
def test_every_attention_layer_saves_and_loads(layer, tmp_path):
    inputs = keras.Input((5, 5, 16))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(5).normal(size=(2, 5, 5, 16)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].get_config() == layer.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_settings_the_chosen_block_does_not_take_are_found_where_changed():
    defaults = {"ratio": 16, "squeeze": "avg", "kernel_size": None}
    assert unused_settings({"kind": "sse", "ratio": 8, "squeeze": "avg"}, defaults) == {"ratio": 8}
    assert unused_settings({"kind": "se", "ratio": 8, "kernel_size": 5}, defaults) == {
        "kernel_size": 5
    }
    assert unused_settings({"kind": "eca", "ratio": 16, "kernel_size": 5}, defaults) == {}
    assert unused_settings({"kind": "scse", "ratio": 8, "squeeze": "max"}, defaults) == {}
    assert unused_settings({"kind": "none", "ratio": 8, "stages": [2]}, defaults) == {}
