"""Training that starts from the weights of a trained model (`model.init_from`).

Layers are matched by name, which sectrain's builders derive from the position in the
network (`conv3_block2_1_conv`), so a model of the same family keeps every layer it
shares with the source: SE-ResNet-50 from a plain ResNet-50 run starts with the trained
convolutions and fresh SE blocks, and a classifier for another number of classes starts
afresh.
"""

import logging
from pathlib import Path

from sectrain.errors import ConfigError
from sectrain.inference.artifacts import keras_model_path, load_keras_model

log = logging.getLogger("sectrain")


def copy_matching_weights(source, model):
    """Copies into `model` the weights of every layer of `source` that `model` has too:
    same name, same kind of layer, same weight shapes.

    Returns:
        (copied, fresh, unused): the names of `model`'s layers given `source`'s weights;
        {name: why} for its layers with weights that keep their initialisation; the
        names of `source`'s layers with weights that no layer of `model` is named after.
    """
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    copied, fresh = [], {}
    for layer in model.layers:
        if not layer.weights:
            continue
        match = by_name.get(layer.name)
        if match is None:
            fresh[layer.name] = "not in the source"
        elif type(match) is not type(layer):
            fresh[layer.name] = f"{type(match).__name__} in the source"
        elif [w.shape for w in match.weights] != [w.shape for w in layer.weights]:
            fresh[layer.name] = "other weight shapes"
        else:
            layer.set_weights(match.get_weights())
            copied.append(layer.name)
    unused = [name for name in by_name if name not in copied and name not in fresh]
    return copied, fresh, unused


def check_init_from(config, run_dir):
    """Raises ConfigError if `config.model.init_from` names no trained model and the run
    in `run_dir` starts afresh (one that resumes takes its weights from its checkpoint).
    A check before TensorFlow loads: `warm_start` loads the model."""
    # "checkpoint" is the index TensorFlow keeps of the checkpoints in a folder
    resumes = (Path(run_dir) / "checkpoints" / "checkpoint").is_file()
    if config.model.init_from and (config.trainer.fresh_start or not resumes):
        try:
            keras_model_path(config.model.init_from)
        except ConfigError as error:
            raise ConfigError(f"model.init_from: {error}") from None


def warm_start(model, origin):
    """Starts `model` from the weights of the model in `origin` (a run folder or a .keras
    file) where their layers match (see `copy_matching_weights`); logs what it took.

    Call it outside a distribution strategy's scope: the source's weights are then read
    into one copy on the host, and written to every replica of `model`.

    Raises:
        ConfigError: `origin` cannot be loaded, or no layer matches (another architecture).
    """
    try:
        source = load_keras_model(origin)
    except ConfigError as error:
        raise ConfigError(f"model.init_from: {error}") from None
    copied, fresh, unused = copy_matching_weights(source, model)
    if not copied:
        raise ConfigError(
            f"model.init_from: {origin} has no layer of {model.name} (same name, kind and "
            "weight shapes): is it another architecture?"
        )
    log.info(
        "model.init_from: %d of %d layers with weights start from %s",
        len(copied),
        len(copied) + len(fresh),
        origin,
    )
    if fresh:
        log.info(
            "initialised afresh: %s", ", ".join(f"{name} ({why})" for name, why in fresh.items())
        )
    if unused:
        log.info("left unused from %s: %s", origin, ", ".join(unused))
