"""Where images come from. A source yields (image, label) pairs, images as uint8 or as
float32 in [0, 1], resized to the configured square size."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from sectrain.errors import ConfigError


@dataclass
class Source:
    train: tf.data.Dataset
    val: tf.data.Dataset
    num_train: int
    num_val: int
    num_classes: int
    class_names: list
    image_shape: tuple  # (height, width, channels)


def load_source(data):
    """Returns the `Source` that `data` (a `DataConfig`) describes."""
    if data.source == "digits":
        return load_digits(data.image_size, data.val_fraction)
    return load_tfds(data)


def load_digits(image_size, val_fraction, split_seed=0):
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, no download),
    resized to `image_size` with a fixed stratified train/validation split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # 0..16 -> [0, 1]
    images = tf.image.resize(images, (image_size, image_size)).numpy().clip(0.0, 1.0)
    labels = digits.target.astype(np.int32)
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=val_fraction, stratify=labels, random_state=split_seed
    )
    return Source(
        train=tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        val=tf.data.Dataset.from_tensor_slices((x_val, y_val)),
        num_train=len(y_train),
        num_val=len(y_val),
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        image_shape=(image_size, image_size, 1),
    )


def load_tfds(data):
    """A TensorFlow Datasets image-classification data set, downloaded on first use."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(data.name, data_dir=data.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"data.name: {data.name!r} is not a TensorFlow Datasets name "
            "(see https://www.tensorflow.org/datasets/catalog)"
        ) from None
    builder.download_and_prepare()
    info = builder.info
    if "image" not in info.features or "label" not in info.features:
        raise ConfigError(f"data.name: {data.name!r} has no 'image' and 'label' features")
    size = (data.image_size, data.image_size)

    def split(name):
        try:
            dataset = builder.as_dataset(split=name, as_supervised=True)
        except ValueError as error:  # TFDS names the splits there are
            raise ConfigError(f"data split {name!r} of {data.name!r}: {error}") from None
        count = int(dataset.cardinality())  # TFDS data sets know their size
        resize = info.features["image"].shape[:2] != size
        dataset = dataset.map(
            lambda image, label: (
                tf.cast(tf.image.resize(image, size), tf.uint8) if resize else image,
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return dataset, count

    train, num_train = split(data.train_split)
    val, num_val = split(data.val_split)
    label = info.features["label"]
    return Source(
        train=train,
        val=val,
        num_train=num_train,
        num_val=num_val,
        num_classes=label.num_classes,
        class_names=list(label.names),
        image_shape=size + (info.features["image"].shape[-1],),
    )
