"""A trained model and what it needs to read images: classes, size, normalisation."""

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from sectrain.data import IMAGE_EXTENSIONS
from sectrain.errors import ConfigError

# TensorFlow and Keras are imported where they are used, so that a wrong path is reported
# before they load
if TYPE_CHECKING:
    import keras


@dataclass
class TrainedModel:
    model: "keras.Model"
    class_names: list | None  # None: a bare .keras file without its run folder
    mean: list | None
    std: list | None
    eval_crop: float = 1.0  # the central fraction evaluation keeps (see DataConfig)

    @property
    def image_shape(self):
        return tuple(self.model.input_shape[1:])

    @functools.cached_property
    def logits(self):
        """The model's inference on a batch of its inputs, as a compiled graph (with XLA
        where training would use it by default) rather than layer by layer."""
        import tensorflow as tf

        from sectrain.train import use_jit

        jit = use_jit(None, tf.distribute.get_strategy())
        return tf.function(lambda images: self.model(images, training=False), jit_compile=jit)

    def at_image_size(self, height, width):
        """This model for height x width images: its own layers and weights, called on an
        input of that size (a network that ends in global pooling takes any size).

        Raises:
            ConfigError: the model cannot (a fully connected layer on flattened features).
        """
        if (height, width) == self.image_shape[:2]:
            return self
        import keras

        inputs = keras.Input((height, width, self.image_shape[-1]))
        try:
            model = keras.models.clone_model(
                self.model, input_tensors=inputs, clone_function=lambda layer: layer
            )
        except ValueError as error:
            first_line = str(error).strip().splitlines()[0]
            trained_height, trained_width, _ = self.image_shape
            raise ConfigError(
                f"data.image_size: the model takes {trained_height}x{trained_width} images "
                f"only ({first_line})"
            ) from None
        return dataclasses.replace(self, model=model)

    def read_images(self, images):
        """A batch of encoded image bytes, or of float images in [0, 1] of one size ->
        the model's normalised inputs, cropped and resized as in evaluation."""
        import tensorflow as tf

        from sectrain.data.images import eval_image
        from sectrain.data.pipeline import normalise

        height, width, channels = self.image_shape

        def read(image):
            image = eval_image(image, (height, width), channels, self.eval_crop)
            return normalise(image, self.mean, self.std)

        if images.dtype != tf.string:
            return read(images)
        return tf.map_fn(read, images, fn_output_signature=tf.float32)


def keras_model_path(target):
    """The .keras file of a run folder (its model.keras), or `target` itself if it is one;
    found without TensorFlow.

    Raises:
        ConfigError: there is no such file.
    """
    target = Path(target)
    model_path = target / "model.keras" if target.is_dir() else target
    if not model_path.is_file() or model_path.suffix != ".keras":
        raise ConfigError(
            f"{str(target)!r} is neither a run folder with model.keras nor a .keras file"
        )
    return model_path


def load_keras_model(target):
    """The Keras model of a run folder (its model.keras) or of a .keras file, as saved."""
    model_path = keras_model_path(target)
    import keras

    import sectrain.layers.attention  # noqa: F401  (registers sectrain's layers for loading)
    import sectrain.layers.common  # noqa: F401

    try:
        return keras.saving.load_model(model_path)
    except Exception as error:  # a truncated or foreign file: say which, not how
        raise ConfigError(f"{str(model_path)!r} could not be loaded: {error}") from None


def run_folder(target):
    """The folder of a run given as its folder or as a .keras file (the file's folder,
    which for a bare .keras file holds no run)."""
    target = Path(target)
    return target if target.is_dir() else target.parent


def run_overrides(target):
    """The Hydra overrides that the run of `target` (a run folder, or a .keras file in one)
    was started with, less those of Hydra itself; none for a bare .keras file."""
    path = run_folder(target) / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(path.read_text()) if path.is_file() else []
    return [o for o in overrides or [] if not o.startswith("hydra")]


def load_trained(target, as_built=False):
    """Loads a run folder (its model.keras and summary.json) or a .keras file, its model
    as sectrain's inference runs it (see `sectrain.inference.fold.inference_model`), or
    as it was built with `as_built=True` (for a look at its attention blocks)."""
    summary_path = run_folder(target) / "summary.json"
    try:  # before the model, which takes TensorFlow
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except json.JSONDecodeError as error:
        raise ConfigError(f"{str(summary_path)!r} cannot be read ({error})") from None
    model = load_keras_model(target)
    if not as_built:
        from sectrain.inference.fold import inference_model  # imports Keras

        model = inference_model(model)
    normalization = summary.get("normalization", {})
    return TrainedModel(
        model,
        summary.get("classes"),
        normalization.get("mean"),
        normalization.get("std"),
        summary.get("eval_crop", 1.0),
    )


def image_files(paths):
    """The image files among `paths`, folders searched recursively, in a stable order."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{str(path)!r}: no such file or folder")
    if not files:
        raise ConfigError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, paths))}"
        )
    return files
