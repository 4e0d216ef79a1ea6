"""Model families. Each registers its builders by name in `MODELS`; every builder takes
`num_classes`, `input_shape`, `attention` (a dict of attention settings, or None),
`sync_bn` and `dropout`, and returns a Keras model that outputs logits."""

from sectrain.models import resnet  # noqa: F401  (registers the ResNets)
from sectrain.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
