"""What the excitations do: the gates of every channel-attention block of a trained
model, averaged per class over a data split.

This is the analysis of Section 7.2 of the SE paper (Figure 6): in SE-ResNet-50 on
ImageNet the early blocks gate every class alike, the later ones differently per class,
and the last ones are close to 1 everywhere (nearly an identity). The class spread that
`sectrain-eval --excitations` prints measures the second point: for each channel, the
standard deviation over classes of the class's mean gate, averaged over the channels.
"""

import numpy as np

from sectrain.errors import ConfigError
from sectrain.lazy import lazy_import

keras = lazy_import("keras")
tf = lazy_import("tensorflow")


def attention_blocks(model):
    """The layers of `model` that gate its channels (those with an `excitation`)."""
    return [layer for layer in model.layers if hasattr(layer, "excitation")]


class ExcitationMeans:
    """Runs a model on batches and sums, per class, each attention block's gates.

    Args:
        model: a Keras model with attention blocks, as built (not folded for inference),
            that outputs one logit per class. Batches may be of another image size, where
            the network takes it (see `TrainedModel.at_image_size`).

    Raises:
        ConfigError: the model has no block that gates channels.
    """

    def __init__(self, model):
        self.blocks = attention_blocks(model)
        if not self.blocks:
            raise ConfigError(
                f"--excitations: {model.name} has no channel attention blocks (se, scse or "
                "eca); was it trained with model.attention.kind=none?"
            )
        self.model = model
        self._forwards = {}  # image shape -> its traced forward pass
        num_classes = model.output.shape[-1]
        self.sums = [np.zeros((num_classes, block.input.shape[-1])) for block in self.blocks]
        self.counts = np.zeros(num_classes, dtype=np.int64)

    def _forward(self, image_shape):
        """The model's logits and each block's gates for a batch of `image_shape` images."""
        if image_shape not in self._forwards:
            # the network again on an input of this shape, with its own layers and weights,
            # that also outputs what each block receives
            block_inputs = {}

            def call(layer, *args, **kwargs):
                if any(layer is block for block in self.blocks):
                    block_inputs[layer.name] = args[0]
                return layer(*args, **kwargs)

            graph = keras.models.clone_model(
                self.model,
                input_tensors=keras.Input(image_shape),
                clone_function=lambda layer: layer,
                call_function=call,
            )
            probe = keras.Model(
                graph.input, [graph.output, *(block_inputs[b.name] for b in self.blocks)]
            )

            @tf.function
            def forward(images):
                logits, *inputs = probe(images, training=False)
                # one gate per channel and image: averaged over positions where each has its own
                gates = [
                    keras.ops.mean(block.excitation(x), axis=(1, 2))
                    for block, x in zip(self.blocks, inputs)
                ]
                return logits, gates

            self._forwards[image_shape] = forward
        return self._forwards[image_shape]

    def __call__(self, images, labels):
        """Adds a batch (images, integer labels); returns the model's logits for it."""
        logits, gates = self._forward(tuple(images.shape[1:]))(images)
        labels = np.asarray(labels)
        for total, batch_gates in zip(self.sums, gates):
            np.add.at(total, labels, batch_gates.numpy())  # row of each image's class
        self.counts += np.bincount(labels, minlength=len(self.counts))
        return logits

    def results(self):
        """{block name: (classes x channels) mean gates; NaN rows for classes that had no
        image}, and the number of images of each class."""
        with np.errstate(invalid="ignore", divide="ignore"):
            means = {
                block.name: total / self.counts[:, None]
                for block, total in zip(self.blocks, self.sums)
            }
        return means, self.counts


def mean_over_images(per_class, counts):
    """Each channel's mean gate over all images, from its (classes x channels) class
    means and the classes' image counts."""
    seen = counts > 0
    return counts[seen] @ per_class[seen] / counts[seen].sum()


def block_statistics(means, counts):
    """One row per block: its channels, mean gate over all images, and class spread (the
    standard deviation over classes of each channel's class mean, averaged over the
    channels; classes without images left out)."""
    seen = counts > 0
    return [
        {
            "block": name,
            "channels": per_class.shape[1],
            "mean_gate": float(mean_over_images(per_class, counts).mean()),
            "class_spread": float(per_class[seen].std(axis=0).mean()),
        }
        for name, per_class in means.items()
    ]


def save_excitations(means, counts, class_names, path):
    """Writes the mean gates as a NumPy .npz file: one (classes x channels) float32 array
    per block, under its layer name, with `classes` and `images_per_class`."""
    means = {name: per_class.astype(np.float32) for name, per_class in means.items()}
    np.savez_compressed(path, classes=np.array(class_names), images_per_class=counts, **means)


def plot_excitations(means, counts, class_names, path, max_blocks=16, max_classes=4):
    """Writes a PNG with, for up to `max_blocks` blocks spread over the depth, each
    channel's mean gate over all images and over those of the first `max_classes`
    classes, as the paper's Figure 6 draws them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(means)
    if len(names) > max_blocks:  # evenly spaced, the first and the last included
        names = [names[round(i)] for i in np.linspace(0, len(names) - 1, max_blocks)]
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    shown = np.flatnonzero(counts)[:max_classes]  # classes with images
    for ax, name in zip(axes.flat, names):
        per_class = means[name]
        channels = np.arange(per_class.shape[1])
        for i in shown:
            ax.plot(channels, per_class[i], linewidth=0.8, label=str(class_names[i]))
        overall = mean_over_images(per_class, counts)
        ax.plot(channels, overall, color="black", linewidth=1.2, label="all")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("channel", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].set_ylabel("mean gate", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
