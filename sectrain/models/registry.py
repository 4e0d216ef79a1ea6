"""The model registry: `model.name` -> how to build it and what it accepts."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from sectrain.errors import ConfigError
from sectrain.registry import Registry

MODELS = Registry("model.name")
# what every builder takes besides its own options
COMMON_ARGUMENTS = ("num_classes", "input_shape", "attention", "sync_bn", "dropout")


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
        check: for a builder whose options shape the network, callable(image_size,
            **options) that raises ConfigError for options it cannot build and returns
            the stages the network then has (in place of `stages`). It needs no
            TensorFlow, so that these mistakes are found with the rest of the config.
    """

    build: Callable
    input_size: int = 224
    num_classes: int = 1000
    min_size: int = 32
    placements: tuple = ("standard",)
    stages: tuple = (2, 3, 4, 5)
    check: Callable | None = None

    def options(self):
        """The builder's own keyword arguments (`model.options.*`) and their defaults;
        `name`, the Keras model's name, is fixed when the model is registered."""
        return {
            name: p.default
            for name, p in inspect.signature(self.build).parameters.items()
            if name not in (*COMMON_ARGUMENTS, "name") and p.kind is p.KEYWORD_ONLY
        }

    def filled(self, options):
        """`options` (model.options) with the builder's defaults for those not given,
        tuples as lists, as a config holds them: the network that they build."""
        defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options().items()}
        return {**defaults, **options}

    def changed(self, options):
        """The entries of `options` (model.options) that differ from the builder's
        defaults: those that make it another network than the registered one."""
        defaults = self.filled({})
        return {k: v for k, v in options.items() if k not in defaults or defaults[k] != v}


def register_model(name, build, **spec):
    MODELS.register(name)(ModelSpec(build, **spec))


def build_model(name, **kwargs):
    """Builds the registered model `name`; see `ModelSpec.build` for the arguments.

    Raises:
        ConfigError: for options the model does not take or cannot build.
    """
    options = {k: v for k, v in kwargs.items() if k not in COMMON_ARGUMENTS}
    check_options(name, options, kwargs["input_shape"][0])
    return MODELS.get(name).build(**kwargs)


# the kinds of option values, most specific first (a bool is an int to Python)
KINDS = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))


def _kind(value):
    """The kind of an option's value, as a noun: "integer", "list of integers", ..."""
    for type_, noun in KINDS:
        if isinstance(value, type_):
            return noun
    if isinstance(value, (list, tuple)):
        kinds = {_kind(item) for item in value}
        if kinds == {"integer", "number"}:
            kinds = {"number"}
        return f"list of {kinds.pop()}s" if len(kinds) == 1 else "list"
    return type(value).__name__


def _check_option(key, value, default):
    """Raises ConfigError unless `value` is of the kind of the builder's `default` (an
    integer will do for a number), with every number positive: the builders' numbers
    are all depths, widths, rates or factors."""
    expected, received = _kind(default), _kind(value)
    if default is not None and expected not in (received, received.replace("integer", "number")):
        article = "an" if expected[0] in "aeiou" else "a"
        example = list(default) if isinstance(default, tuple) else default  # as YAML writes it
        raise ConfigError(
            f"{key}: takes {article} {expected}, like {example!r}. Received: {value!r}"
        )
    numbers = value if isinstance(value, (list, tuple)) else [value]
    if any(_kind(n) in ("integer", "number") and n <= 0 for n in numbers):
        raise ConfigError(f"{key}: must be positive. Received: {value!r}")


def check_model(name, attention, options, image_size):
    """Raises ConfigError if the model cannot take these attention settings, options or
    input size."""
    spec = MODELS.get(name)
    stages = check_options(name, options, image_size)
    if attention.kind != "none" and attention.placement not in spec.placements:
        raise ConfigError(
            f"model.attention.placement: {name} supports {', '.join(spec.placements)}. "
            f"Received: {attention.placement}"
        )
    for stage in attention.stages or ():
        if stage not in stages:
            shaped = " with these model.options" if options else ""
            raise ConfigError(
                f"model.attention.stages: {name}{shaped} has stages {list(stages)}. "
                f"Received: {stage}"
            )


def check_options(name, options, image_size):
    """Raises ConfigError if model `name` does not take these options or cannot be built
    with them at this input size; returns the stages of the network they build."""
    spec = MODELS.get(name)
    allowed = spec.options()
    for option, value in options.items():
        if option not in allowed:
            raise ConfigError(
                f"model.options: {name} has no option {option!r}. Its options: "
                + (", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none")
            )
        _check_option(f"model.options.{option}", value, allowed[option])
    if image_size < spec.min_size:
        raise ConfigError(
            f"data.image_size: {name} needs inputs of at least {spec.min_size}x{spec.min_size}. "
            f"Received: {image_size}"
        )
    if spec.check is None:
        return spec.stages
    return tuple(spec.check(image_size, **{**allowed, **options}))
