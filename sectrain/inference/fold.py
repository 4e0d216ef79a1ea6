"""Folding SE blocks into the 1x1 convolution before them, for inference.

In a bottleneck unit the SE block rescales x = BN(conv(h)), the output of a 1x1
convolution and (usually) a batch norm, which at inference is an affine map per channel:
BN(conv(h)) = conv(h, W * a) + b. So, for an image with gates s:

- the squeeze is mean(x) = mean(h) @ (W * a) + b, as a 1x1 convolution commutes with the
  spatial mean;
- the rescale is x * s = conv(h, W * a * s) + b * s: the gates scale the image's kernel
  (Cin x Cout numbers) instead of its feature map (H x W x Cout numbers).

Where the kernel is small next to the feature map (the early stages), this saves passes
over the map, which is what the rescale costs on a CPU. On a GPU it does not pay (see
`inference_model`). For one image the scaled kernel feeds a plain convolution, which
TensorFlow fuses with the residual addition and ReLU that follow, as in the plain
network; for several, each image's convolution is one product of a batched matrix
multiplication. Training runs the blocks unchanged.
"""

import keras
import tensorflow as tf
from keras import layers, ops

from sectrain.layers.attention import SqueezeExcite


def _is_pointwise(layer):
    """A plain 1x1 convolution: one group, stride 1, no activation, channels last."""
    return (
        type(layer) is layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and layer.activation is keras.activations.linear
    )


def _is_channel_norm(layer):
    return type(layer) is layers.BatchNormalization and layer.axis in (-1, 3)


class FoldedSqueezeExcite(layers.Layer):
    """A 1x1 convolution, an optional batch norm and an average-squeeze SE block, as one
    layer over the convolution's input. It owns no weights: it uses the three layers'.

    Args:
        conv: the `Conv2D` (1x1, stride 1, one group, no activation).
        norm: the `BatchNormalization` after it, or None.
        excite: the `SqueezeExcite` (squeeze "avg") after that.
    """

    def __init__(self, conv, norm, excite, **kwargs):
        super().__init__(dtype=excite.dtype_policy, **kwargs)
        self.conv, self.norm, self.excite = conv, norm, excite

    def folds(self, input_shape):
        """Whether the fold pays for inputs of this shape. Scaling the kernel reads and
        writes Cin x Cout numbers; it spares a read and write of the H x W x Cout output
        for the rescale, and another for the addition and ReLU that fuse into the
        convolution: it pays while Cin < 2 H W (in SE-ResNet-50, stages 2-4)."""
        _, height, width, channels = input_shape
        return height is not None and width is not None and channels < 2 * height * width

    def affine(self):
        """(kernel, scale, shift) in float32, with BN(conv(h)) = conv(h, kernel) * scale
        + shift."""
        kernel = ops.cast(self.conv.kernel[0, 0], "float32")
        channels = kernel.shape[-1]
        shift = ops.cast(self.conv.bias, "float32") if self.conv.use_bias else ops.zeros(channels)
        if self.norm is None:
            return kernel, ops.ones(channels), shift
        n = self.norm
        scale = ops.rsqrt(ops.cast(n.moving_variance, "float32") + n.epsilon)
        if n.scale:
            scale = scale * ops.cast(n.gamma, "float32")
        shift = (shift - ops.cast(n.moving_mean, "float32")) * scale
        if n.center:
            shift = shift + ops.cast(n.beta, "float32")
        return kernel, scale, shift

    def call(self, inputs, training=None):
        if training or not self.folds(inputs.shape):
            x = self.conv(inputs)
            if self.norm is not None:
                x = self.norm(x, training=training)
            return self.excite(x)
        kernel, scale, shift = self.affine()
        squeezed = (ops.mean(ops.cast(inputs, "float32"), axis=(1, 2)) @ kernel) * scale + shift
        gates = ops.cast(self.excite.expand(self.excite.reduce(squeezed)), "float32")
        scales = scale * gates  # (batch, Cout)
        kernels = ops.cast(kernel * scales[:, None, :], inputs.dtype)  # (batch, Cin, Cout)
        biases = ops.cast(shift * gates, inputs.dtype)
        if inputs.shape[0] == 1:
            # Conv2D then BiasAdd: the pattern that TensorFlow's graph optimizer fuses
            # with the addition and ReLU that follow
            outputs = tf.nn.conv2d(inputs, kernels[0][None, None], 1, "VALID")
            return tf.nn.bias_add(outputs, biases[0])
        return tf.einsum("nhwc,ncd->nhwd", inputs, kernels) + biases[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.conv.filters)


def fold_for_inference(model):
    """A model computing what `model` computes in inference, sharing its weights, in
    which every 1x1 convolution (and batch norm) feeding an average-squeeze SE block is
    a `FoldedSqueezeExcite`. The model itself is unchanged; a model without such chains
    comes back as an equivalent copy."""
    # symbolic output of a 1x1 convolution, or of its batch norm -> (conv, norm, conv input)
    chains = {}

    def call(layer, *args, **kwargs):
        source = id(args[0]) if args else None
        if isinstance(layer, SqueezeExcite) and layer.squeeze == "avg" and source in chains:
            conv, norm, inputs = chains[source]
            return FoldedSqueezeExcite(conv, norm, layer, name=f"{layer.name}_folded")(inputs)
        outputs = layer(*args, **kwargs)
        if _is_pointwise(layer):
            chains[id(outputs)] = (layer, None, args[0])
        elif _is_channel_norm(layer) and source in chains and chains[source][1] is None:
            conv, _, inputs = chains[source]
            chains[id(outputs)] = (conv, layer, inputs)
        return outputs

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)


def inference_model(model):
    """The model as sectrain's inference runs it: folded (`fold_for_inference`) on a CPU;
    as built where there is a GPU, on which folding was slower (one H100, SE-ResNet-50 at
    batch 1: 3.19 against 3.09 ms with XLA, 7.76 against 7.01 ms without)."""
    if tf.config.list_logical_devices("GPU"):
        return model
    return fold_for_inference(model)
