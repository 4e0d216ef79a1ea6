"""Folding SE blocks into the 1x1 convolution before them, for one-image inference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sectrain.inference.fold import FoldedSqueezeExcite, fold_for_inference, inference_model
from sectrain.models.resnet import build_resnet


def small_resnet(attention, preact=False, block="bottleneck"):
    """Two stages of one unit at 32x32 and 16x16, narrow enough that every fold pays at
    batch 1, with batch-norm statistics and scales far from their initial values."""
    model = build_resnet(
        5,
        (32, 32, 3),
        attention,
        block=block,
        depths=(1, 1),
        planes=(4, 8),
        stem="cifar",
        stem_width=8,
        preact=preact,
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.normal(0, 0.5, shape))
    return model


def se(**settings):
    return {"kind": "se", "placement": "standard", "stages": None, "ratio": 4, **settings}


def folded_layers(model):
    return [layer for layer in model.layers if isinstance(layer, FoldedSqueezeExcite)]


@pytest.mark.parametrize("preact", [False, True], ids=["post-activation", "pre-activation"])
def test_folded_model_computes_the_same_logits(preact):
    model = small_resnet(se(), preact=preact)
    folded = fold_for_inference(model)
    # one per unit, with the batch norm in a post-activation unit and without it in a
    # pre-activation one (whose branch ends in the convolution)
    chains = folded_layers(folded)
    assert len(chains) == 2
    assert all((chain.norm is None) == preact for chain in chains)
    assert all(chain.folds(chain.input.shape) for chain in chains)
    assert folded.count_params() == model.count_params()
    images = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype("float32")
    # a convolution per image at batch 1, a batched product at batch 3, and either where
    # the batch is only known when the graph runs (as in an exported model)
    any_batch = tf.function(
        lambda x: folded(x, training=False),
        input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)],
    )
    for batch in (images[:1], images):
        expected = keras.ops.convert_to_numpy(model(batch, training=False))
        for got in (folded(batch, training=False), any_batch(batch)):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(got), expected, rtol=1e-4, atol=1e-4
            )


def test_folded_model_shares_the_weights_it_was_made_from():
    model = small_resnet(se())
    folded = fold_for_inference(model)
    image = np.ones((1, 32, 32, 3), "float32")
    before = keras.ops.convert_to_numpy(folded(image, training=False))
    chain = folded_layers(folded)[0]
    chain.conv.kernel.assign(chain.conv.kernel * 2)
    after = keras.ops.convert_to_numpy(folded(image, training=False))
    np.testing.assert_allclose(after, model(image, training=False), rtol=1e-4, atol=1e-4)
    assert not np.allclose(after, before)


def test_fold_keeps_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = small_resnet(se())
        folded = fold_for_inference(model)
    finally:
        keras.config.set_dtype_policy("float32")
    image = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(image, training=False))
    got = keras.ops.convert_to_numpy(folded(image, training=False))
    assert len(folded_layers(folded)) == 2
    np.testing.assert_allclose(got, expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


@pytest.mark.parametrize(
    "attention, block",
    [
        (None, "bottleneck"),  # no SE block
        (se(squeeze="max"), "bottleneck"),  # the max does not commute with the convolution
        (se(placement="3x3"), "bottleneck"),  # after a 3x3 convolution and a ReLU
        (se(), "basic"),  # the branch ends in a 3x3 convolution
    ],
    ids=["plain", "max-squeeze", "se-3x3", "basic-block"],
)
def test_chains_that_cannot_fold_stay_as_they_are(attention, block):
    model = small_resnet(attention, block=block)
    folded = fold_for_inference(model)
    assert folded_layers(folded) == []
    image = np.random.default_rng(3).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(folded(image, training=False)),
        keras.ops.convert_to_numpy(model(image, training=False)),
    )


def gpus_visible(monkeypatch, gpus):
    """Makes TensorFlow appear to have `gpus` logical GPUs."""
    listed = tf.config.list_logical_devices
    monkeypatch.setattr(
        tf.config,
        "list_logical_devices",
        lambda kind=None: [f"GPU:{i}" for i in range(gpus)] if kind == "GPU" else listed(kind),
    )


def test_a_model_loaded_on_a_cpu_is_folded(tmp_path, monkeypatch):
    from sectrain.inference.artifacts import load_trained

    gpus_visible(monkeypatch, 0)
    model = small_resnet(se())
    model.save(tmp_path / "model.keras")
    loaded = load_trained(tmp_path / "model.keras").model
    assert len(folded_layers(loaded)) == 2
    image = np.random.default_rng(4).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(image, training=False)),
        keras.ops.convert_to_numpy(model(image, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_with_a_gpu_inference_runs_the_model_as_built(monkeypatch):
    gpus_visible(monkeypatch, 1)
    model = small_resnet(se())
    assert inference_model(model) is model
