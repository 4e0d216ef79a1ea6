"""tf.data pipelines: cache, shuffle, augment and normalise, batch, prefetch."""

import numpy as np
import tensorflow as tf

from sectrain.data.augment import augment

STATS_SAMPLE = 5000  # images used to measure the per-channel mean and std


def channel_stats(dataset, channels):
    """Per-channel mean and std of (up to) the first STATS_SAMPLE images, in [0, 1]."""
    images = dataset.take(STATS_SAMPLE).map(lambda image, _: to_float(image)).batch(500)
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for batch in images.as_numpy_iterator():
        pixels = batch.reshape(-1, channels).astype(np.float64)
        total += pixels.sum(0)
        total_sq += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def to_float(image):
    """uint8 images scale to [0, 1]; float images are taken as already in [0, 1]."""
    return tf.image.convert_image_dtype(image, tf.float32)


def normalisation(source, data):
    """The per-channel (mean, std) to normalise with: the config's, else measured."""
    measured = (None, None)
    if data.mean is None or data.std is None:
        measured = channel_stats(source.train, source.image_shape[-1])
    mean = data.mean if data.mean is not None else measured[0]
    std = data.std if data.std is not None else measured[1]
    return list(mean), list(std)


def normalise(image, mean, std):
    """The model's input: (image in [0, 1] - mean) / std, per channel."""
    return (to_float(image) - np.float32(mean)) / np.float32(std)


def eval_pipeline(dataset, mean, std, batch_size, cache=False):
    """Normalised, batched, prefetched (image, label) pairs in the data set's order."""
    dataset = dataset.map(lambda image, label: (normalise(image, mean, std), label))
    if cache:
        dataset = dataset.cache()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_pipelines(source, data, global_batch_size, seed, skip=0):
    """Returns (train, val, (mean, std)): batched datasets of normalised float32 images
    and int labels, and the per-channel statistics they are normalised with.

    The training stream repeats forever, reshuffled each pass, the same for the same
    seed; `skip` examples of it are left out (those a resumed run has trained on).
    Callers take `source.num_train // global_batch_size` steps per epoch.
    """
    mean, std = normalisation(source, data)

    def train_example(index, example):
        image, label = example
        example_seed = tf.stack([tf.cast(seed, tf.int64), index])
        image = augment(to_float(image), example_seed, data.augment.pad_crop, data.augment.flip)
        return normalise(image, mean, std), label

    train = source.train.cache() if data.cache else source.train
    train = (
        train.shuffle(min(data.shuffle_buffer, source.num_train), seed=seed)
        .repeat()
        .skip(skip)
        .enumerate(start=skip)
        .map(train_example, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(global_batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = eval_pipeline(source.val, mean, std, global_batch_size, data.cache)
    # Across workers, each keeps its part of every batch: all read the same seeded order.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return train.with_options(options), val.with_options(options), (mean, std)
