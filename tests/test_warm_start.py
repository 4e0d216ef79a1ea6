"""Training that starts from a trained model's weights: `model.init_from`."""

import keras
import numpy as np
import pytest

from sectrain.data.sources import load_source
from sectrain.errors import ConfigError
from sectrain.models import build_model
from sectrain.train import build_trainer
from sectrain.training.strategy import make_strategy
from sectrain.training.warm_start import copy_matching_weights
from tests.helpers import make_config


def test_a_model_starts_from_every_layer_it_shares_with_the_source(tmp_path, caplog):
    # the source: the plain network of the default model, for 100 classes
    keras.utils.set_random_seed(1)
    plain = build_model(
        "cifar_resnet20", num_classes=100, input_shape=(32, 32, 1), attention={"kind": "none"}
    )
    plain.save(tmp_path / "plain.keras")
    expected = {layer.name: layer.get_weights() for layer in plain.layers}

    config = make_config(
        "model.init_from=" + str(tmp_path / "plain.keras"), "trainer.ema_decay=0.9"
    )
    source = load_source(config.data)
    strategy = make_strategy("mirrored")  # the weights reach each replica
    keras.utils.set_random_seed(0)
    with caplog.at_level("INFO", logger="sectrain"):
        model, _, loop = build_trainer(
            config, strategy, source, steps_per_epoch=1, init_from=config.model.init_from
        )
    fresh = {"predictions"} | {layer.name for layer in model.layers if layer.name.endswith("_se")}
    assert len(fresh) > 1  # the classifier and the SE blocks
    shared = [layer for layer in model.layers if layer.weights and layer.name not in fresh]
    assert len(shared) > 20
    for layer in shared:
        for variable, want in zip(layer.weights, expected[layer.name]):
            for copy in strategy.experimental_local_results(variable.value):
                np.testing.assert_array_equal(copy.numpy(), want)
    kernel = model.get_layer("predictions").get_weights()[0]
    assert kernel.shape == (64, 10) and np.abs(kernel).max() > 0  # initialised, for 10 classes
    # the moving averages start from the weights the model starts from
    for average, variable in zip(loop.averages, model.trainable_variables):
        np.testing.assert_array_equal(average.numpy(), variable.numpy())
    assert f"{len(shared)} of {len(shared) + len(fresh)} layers" in caplog.text
    assert "predictions (other weight shapes)" in caplog.text
    assert "conv2_block1_se (not in the source)" in caplog.text


def test_a_source_of_another_architecture_is_a_config_error(tmp_path):
    inputs = keras.Input((32, 32, 1))
    other = keras.Model(inputs, keras.layers.Dense(10, name="scores")(inputs))
    other.save(tmp_path / "other.keras")
    config = make_config("model.init_from=" + str(tmp_path / "other.keras"))
    source = load_source(config.data)
    strategy = make_strategy("default")
    with pytest.raises(ConfigError, match="has no layer of .* another architecture"):
        build_trainer(config, strategy, source, steps_per_epoch=1, init_from=config.model.init_from)


def test_a_layer_of_another_kind_keeps_its_initialisation():
    def model(head, *extra):
        inputs = keras.Input((3,))
        outputs = head(keras.layers.Dense(3, name="body")(inputs))
        for layer in extra:
            outputs = layer(outputs)
        return keras.Model(inputs, outputs)

    source = model(keras.layers.Dense(4, name="head"), keras.layers.Dense(2, name="extra"))
    target = model(
        keras.layers.EinsumDense("ab,bc->ac", output_shape=4, bias_axes="c", name="head")
    )
    copied, fresh, unused = copy_matching_weights(source, target)
    # "head" is reported once, as a layer of the model that starts afresh
    assert (copied, fresh, unused) == (["body"], {"head": "Dense in the source"}, ["extra"])
    np.testing.assert_array_equal(target.get_layer("body").kernel, source.get_layer("body").kernel)
