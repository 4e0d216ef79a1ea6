"""Model families. Each module registers its models in `MODELS` (see `ModelSpec`); every
builder takes `num_classes`, `input_shape`, `attention` (a dict of attention settings,
or None), `sync_bn` and `dropout`, and returns a Keras model that outputs logits."""

from sectrain.models import (  # noqa: F401 (registers)
    densenet,
    inception,
    mobilenet,
    resnet,
    shakeshake,
    shufflenet,
    vgg,
)
from sectrain.models.registry import MODELS, ModelSpec, build_model, check_model

__all__ = ["MODELS", "ModelSpec", "build_model", "check_model"]
