"""The model registry: `model.name` -> builder."""

from sectrain.registry import Registry

MODELS = Registry("model.name")


def build_model(name, **kwargs):
    """Builds the registered model `name`; see `sectrain.models` for the arguments."""
    return MODELS.get(name)(**kwargs)
