"""Where images come from. A source yields (image, label) pairs: images as uint8 or as
float32 in [0, 1] resized to the configured square size, or, where the recipe crops
from the full image (random-size crops, centre-crop evaluation), as encoded bytes."""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from sectrain.data import IMAGE_EXTENSIONS
from sectrain.data.images import decode_image
from sectrain.errors import ConfigError

log = logging.getLogger("sectrain")


@dataclass
class Source:
    train: tf.data.Dataset
    val: tf.data.Dataset
    num_train: int
    num_val: int
    num_classes: int
    class_names: list
    image_shape: tuple  # (height, width, channels) of the model's input
    encoded: bool = False  # images are encoded bytes at their own size


def wants_full_images(data):
    """Whether the recipe crops from the full-size image rather than a resized one."""
    return data.augment.scale is not None or data.eval_crop < 1.0


def load_source(data):
    """Returns the `Source` that `data` (a `DataConfig`) describes."""
    if data.source == "digits":
        return load_digits(data.image_size, data.val_fraction)
    if data.source == "folder":
        return load_folder(data)
    if data.source == "synthetic":
        return load_synthetic(data)
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
    manual = tfds.download.DownloadConfig(manual_dir=data.manual_dir) if data.manual_dir else None
    try:
        builder.download_and_prepare(download_config=manual)
    except (AssertionError, OSError) as error:  # e.g. archives missing from manual_dir
        import requests  # what TFDS downloads with

        message = f"data.name: {data.name!r} could not be prepared: {error}"
        if isinstance(error, requests.ConnectionError):  # after TFDS's retries: minutes
            message += (
                ". Without internet here: run sectrain with data.data_dir=DIR on a machine "
                "that has it (the data downloads before training starts), then here with "
                "data.data_dir=DIR, DIR copied or shared"
            )
        elif builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
            message += "\nThe folder is set by data.manual_dir=DIR"
            message += f" (now {data.manual_dir})" if data.manual_dir else ""
        raise ConfigError(message) from None
    info = builder.info
    if "image" not in info.features or "label" not in info.features:
        raise ConfigError(f"data.name: {data.name!r} has no 'image' and 'label' features")
    size = (data.image_size, data.image_size)
    encoded = wants_full_images(data)

    def split(name):
        # full-size recipes decode in the pipeline, where a JPEG decodes only its crop
        decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
        try:
            dataset = builder.as_dataset(split=name, as_supervised=True, decoders=decoders)
        except ValueError as error:  # TFDS names the splits there are
            raise ConfigError(f"data split {name!r} of {data.name!r}: {error}") from None
        count = int(dataset.cardinality())  # TFDS data sets know their size
        resize = info.features["image"].shape[:2] != size
        if encoded or not resize:
            return dataset, count
        dataset = dataset.map(
            lambda image, label: (
                tf.cast(tf.image.resize(image, size), tf.uint8),
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
        encoded=encoded,
    )


# The first bytes of each readable format
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def looks_like_image(path):
    with open(path, "rb") as f:
        return f.read(8).startswith(IMAGE_SIGNATURES)


def list_images(root, bad_images="skip"):
    """Returns (paths, labels, class names) of a folder with one sub-folder per class,
    the layout of `keras.utils.image_dataset_from_directory`; classes sort by name.

    Files with an image name but not an image's first bytes are skipped with a warning
    (`bad_images="skip"`) or stop the run (`"fail"`).
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data.path: {str(root)!r} is not a folder")
    class_names = sorted(d.name for d in root.iterdir() if d.is_dir())
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    readable = [looks_like_image(p) for p in paths]
    bad = [p for p, ok in zip(paths, readable) if not ok]
    if bad:
        listed = ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
        if bad_images == "fail":
            raise ConfigError(
                f"data.path: {len(bad)} files are not decodable images ({listed}); remove "
                "them, or set data.bad_images=skip"
            )
        log.warning("skipping %d files that are not decodable images: %s", len(bad), listed)
        paths = [p for p, ok in zip(paths, readable) if ok]
        labels = [label for label, ok in zip(labels, readable) if ok]
    if len(class_names) < 2 or not paths:
        raise ConfigError(
            f"data.path: {str(root)!r} needs one sub-folder of images "
            f"({', '.join(IMAGE_EXTENSIONS)}) per class, at least two classes. "
            f"Found {len(class_names)} sub-folders and {len(paths)} images"
        )
    return paths, labels, class_names


def load_folder(data, split_seed=0):
    """Images from a folder: `path/train` and `path/val` if both exist, else `path` split
    by `data.val_fraction` (stratified, fixed). Files are read as the pipeline needs
    them, so a folder of any size streams."""
    from sklearn.model_selection import train_test_split

    root = Path(data.path)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_paths, train_labels, class_names = list_images(root / "train", data.bad_images)
        val_paths, val_labels, val_classes = list_images(root / "val", data.bad_images)
        if val_classes != class_names:
            raise ConfigError(
                f"data.path: the classes of {str(root / 'val')!r} ({val_classes}) differ "
                f"from those of {str(root / 'train')!r} ({class_names})"
            )
        order = np.random.default_rng(split_seed).permutation(len(train_paths))
        train_paths = [train_paths[i] for i in order]
        train_labels = [train_labels[i] for i in order]
    else:
        paths, labels, class_names = list_images(root, data.bad_images)
        train_paths, val_paths, train_labels, val_labels = train_test_split(
            paths, labels, test_size=data.val_fraction, stratify=labels, random_state=split_seed
        )
    size = (data.image_size, data.image_size)
    encoded = wants_full_images(data)

    def read(paths, labels):
        dataset = tf.data.Dataset.from_tensor_slices((paths, np.int32(labels)))
        dataset = dataset.map(
            lambda path, label: (
                tf.io.read_file(path) if encoded else decode_image(tf.io.read_file(path), size),
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if encoded:  # decoded, and its errors met, in the pipeline
            return dataset
        # a file cut short after its first bytes fails only when decoded
        return dataset.ignore_errors(log_warning=True) if data.bad_images == "skip" else dataset

    return Source(
        train=read(train_paths, train_labels),
        val=read(val_paths, val_labels),
        num_train=len(train_paths),
        num_val=len(val_paths),
        num_classes=len(class_names),
        class_names=class_names,
        image_shape=size + (3,),
        encoded=encoded,
    )


def load_synthetic(data):
    """Random images, for measuring throughput without a download (see sectrain-bench).

    Smooth random colour fields with fine noise, of `data.synthetic.shape`; stored
    JPEG-encoded when the recipe crops full-size images (as ImageNet's are), else as
    uint8 arrays. The labels are random: nothing can be learnt from them.
    """
    spec = data.synthetic
    rng = np.random.default_rng(0)
    height, width, channels = spec.shape
    encoded = wants_full_images(data)
    size = (data.image_size, data.image_size)
    images = []
    for start in range(0, spec.images, 64):  # in chunks: a few MB at a time
        count = min(64, spec.images - start)
        coarse = rng.uniform(0, 255, (count, -(-height // 32), -(-width // 32), channels))
        chunk = tf.image.resize(coarse.astype(np.float32), (height, width))
        chunk += 12 * rng.standard_normal(chunk.shape, dtype=np.float32)
        chunk = tf.cast(tf.clip_by_value(tf.round(chunk), 0, 255), tf.uint8)
        if encoded:
            images += [tf.io.encode_jpeg(image, quality=90).numpy() for image in chunk]
        else:
            images.append(tf.cast(tf.round(tf.image.resize(chunk, size)), tf.uint8).numpy())
    images = images if encoded else np.concatenate(images)
    labels = rng.integers(0, spec.classes, spec.images).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return Source(
        train=dataset,
        val=dataset,
        num_train=spec.images,
        num_val=spec.images,
        num_classes=spec.classes,
        class_names=[str(c) for c in range(spec.classes)],
        image_shape=(data.image_size, data.image_size, channels),
        encoded=encoded,
    )
