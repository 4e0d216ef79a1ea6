"""The gates of a trained model's attention blocks per class: `sectrain-eval --excitations`."""

import keras
import numpy as np
import pytest

from sectrain.errors import ConfigError
from sectrain.inference.excitations import ExcitationMeans, attention_blocks, block_statistics
from sectrain.models import build_model
from tests.helpers import SE


@pytest.mark.parametrize(
    "attention",
    [
        SE,
        {**SE, "squeeze": "none"},  # a gate per position
        {"kind": "eca"},
    ],
)
def test_class_means_are_those_of_the_gates_the_blocks_apply(attention):
    keras.utils.set_random_seed(0)
    model = build_model(
        "cifar_resnet20", num_classes=3, input_shape=(32, 32, 1), attention=attention
    )
    images = np.random.default_rng(0).normal(size=(8, 32, 32, 1)).astype("float32")
    labels = np.array([0, 2, 2, 0, 1, 0, 2, 2])
    excitations = ExcitationMeans(model)
    for batch in (slice(0, 5), slice(5, 8)):  # sums over batches
        logits = excitations(images[batch], labels[batch])
        np.testing.assert_allclose(logits, model(images[batch]), atol=1e-5)
    means, counts = excitations.results()
    assert list(counts) == [3, 1, 4]

    blocks = attention_blocks(model)
    assert list(means) == [block.name for block in blocks] and len(blocks) == 9
    # the gates each block applied: its output over its input, averaged over positions
    probe = keras.Model(model.input, [t for b in blocks for t in (b.input, b.output)])
    tensors = [np.asarray(t, dtype="float64") for t in probe(images)]
    for block, block_input, block_output in zip(blocks, tensors[::2], tensors[1::2]):
        gates = (block_output / block_input).mean(axis=(1, 2))
        expected = [gates[labels == label].mean(axis=0) for label in range(3)]
        np.testing.assert_allclose(means[block.name], expected, rtol=1e-4)
        assert np.all((gates > 0) & (gates < 1))  # sigmoid gates


def test_gates_at_another_image_size_are_those_of_the_network_built_for_it():
    models = {}
    for size in (32, 40):  # the same seed: the same weights, whatever the input size
        keras.utils.set_random_seed(0)
        models[size] = build_model(
            "cifar_resnet20", num_classes=3, input_shape=(size, size, 1), attention=SE
        )
    images = np.random.default_rng(0).normal(size=(6, 40, 40, 1)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2])
    resized, built_for_40 = ExcitationMeans(models[32]), ExcitationMeans(models[40])
    np.testing.assert_allclose(resized(images, labels), models[40](images), atol=1e-5)
    built_for_40(images, labels)
    got, want = resized.results()[0], built_for_40.results()[0]
    assert list(got) == list(want)
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5)


def test_a_model_without_attention_blocks_is_a_config_error():
    model = build_model(
        "cifar_resnet20", num_classes=3, input_shape=(32, 32, 1), attention={"kind": "none"}
    )
    with pytest.raises(ConfigError, match="no channel attention blocks"):
        ExcitationMeans(model)


def test_block_statistics_weigh_classes_by_their_images():
    means = {
        "alike": np.array([[0.5, 1.0], [0.5, 1.0], [np.nan, np.nan]]),  # class 3: no image
        "apart": np.array([[0.0, 1.0], [1.0, 0.0], [np.nan, np.nan]]),
    }
    rows = block_statistics(means, np.array([3, 1, 0]))
    assert rows == [
        {"block": "alike", "channels": 2, "mean_gate": 0.75, "class_spread": 0.0},
        {"block": "apart", "channels": 2, "mean_gate": 0.5, "class_spread": 0.5},
    ]
