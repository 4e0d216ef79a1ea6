"""The model registry: `model.name` -> how to build it and what it accepts."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from sectrain.errors import ConfigError
from sectrain.registry import Registry

MODELS = Registry("model.name")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        build: callable(num_classes, input_shape, attention, sync_bn, dropout, **options)
            returning a Keras model that outputs logits.
        input_size: the side of the square input the model is designed for.
        num_classes: the classes of the data set it is designed for (ImageNet: 1000).
        min_size: the smallest input side it accepts.
        placements: the `model.attention.placement` values it supports.
        stages: the `model.attention.stages` values it has.
    """

    build: Callable
    input_size: int = 224
    num_classes: int = 1000
    min_size: int = 32
    placements: tuple = ("standard",)
    stages: tuple = (2, 3, 4, 5)

    def options(self):
        """The builder's own keyword arguments (`model.options.*`) and their defaults."""
        common = {"num_classes", "input_shape", "attention", "sync_bn", "dropout"}
        return {
            name: p.default
            for name, p in inspect.signature(self.build).parameters.items()
            if name not in common and p.kind is p.KEYWORD_ONLY
        }


def register_model(name, build, **spec):
    MODELS.register(name)(ModelSpec(build, **spec))


def build_model(name, **kwargs):
    """Builds the registered model `name`; see `ModelSpec.build` for the arguments."""
    return MODELS.get(name).build(**kwargs)


def check_model(name, attention, options, image_size):
    """Raises ConfigError if the model cannot take these attention settings, options or
    input size."""
    spec = MODELS.get(name)
    allowed = spec.options()
    for option in options:
        if option not in allowed:
            raise ConfigError(
                f"model.options: {name} has no option {option!r}. Its options: "
                + (", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none")
            )
    if attention.kind != "none" and attention.placement not in spec.placements:
        raise ConfigError(
            f"model.attention.placement: {name} supports {', '.join(spec.placements)}. "
            f"Received: {attention.placement}"
        )
    for stage in attention.stages or ():
        if stage not in spec.stages:
            raise ConfigError(
                f"model.attention.stages: {name} has stages {list(spec.stages)}. Received: {stage}"
            )
    if image_size < spec.min_size:
        raise ConfigError(
            f"data.image_size: {name} needs inputs of at least {spec.min_size}x{spec.min_size}. "
            f"Received: {image_size}"
        )
