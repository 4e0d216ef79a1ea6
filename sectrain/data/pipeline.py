"""tf.data pipelines: cache, shuffle, augment and normalise, batch, prefetch."""

import numpy as np
import tensorflow as tf

from sectrain.data.augment import augment, cutout, random_size_crop
from sectrain.data.images import decode_image, eval_image, to_float
from sectrain.errors import ConfigError

STATS_SAMPLE = 5000  # images used to measure the per-channel mean and std
STATS_SIZE = (64, 64)  # encoded images are measured at this size


def channel_stats(source):
    """Per-channel mean and std of (up to) the first STATS_SAMPLE training images, in [0, 1]."""
    channels = source.image_shape[-1]

    def pixels(image, _):
        return to_float(decode_image(image, STATS_SIZE, channels) if source.encoded else image)

    images = source.train.take(STATS_SAMPLE).map(pixels, tf.data.AUTOTUNE).batch(500)
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for batch in images.as_numpy_iterator():
        values = batch.reshape(-1, channels).astype(np.float64)
        total += values.sum(0)
        total_sq += (values**2).sum(0)
        count += len(values)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def normalisation(source, data):
    """The per-channel (mean, std) to normalise with: the config's, else measured."""
    measured = (None, None)
    if data.mean is None or data.std is None:
        measured = channel_stats(source)
    mean = data.mean if data.mean is not None else measured[0]
    std = data.std if data.std is not None else measured[1]
    return list(mean), list(std)


def normalise(image, mean, std):
    """The model's input: (image in [0, 1] - mean) / std, per channel."""
    return (to_float(image) - np.float32(mean)) / np.float32(std)


def eval_examples(dataset, source, data, mean, std):
    """`dataset`'s (image, label) pairs as the model is evaluated on them: centre-cropped
    as `data.eval_crop` says and normalised; unreadable files skipped where
    `data.bad_images` says so."""
    height, width, channels = source.image_shape

    def example(image, label):
        image = eval_image(image, (height, width), channels, data.eval_crop)
        return normalise(image, mean, std), label

    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    if source.encoded and data.bad_images == "skip":
        dataset = dataset.ignore_errors(log_warning=True)
    return dataset


def eval_pipeline(dataset, source, data, mean, std, batch_size):
    """`eval_examples` of `dataset` in its order, batched and prefetched."""
    dataset = eval_examples(dataset, source, data, mean, std)
    if data.cache and not source.encoded:
        dataset = dataset.cache()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epoch_steps(source, global_batch_size):
    """The steps of an epoch: whole batches of `source`'s training set."""
    steps = source.num_train // global_batch_size
    if steps == 0:
        raise ConfigError(
            f"trainer.global_batch_size: larger than the {source.num_train} training "
            f"images. Received: {global_batch_size}"
        )
    return steps


def val_steps(source, global_batch_size):
    """The steps of one pass over the validation set, the last batch padded
    (`val_pipeline`)."""
    return -(-source.num_val // global_batch_size)


def training_order(source, data, global_batch_size, seed, start_step=0):
    """The training examples, endless, as (position, (image, label)) pairs from step
    `start_step` on; position counts the examples of the stream from step 0.

    Epoch follows epoch, each a pass over the training set in an order of its own (a
    function of `seed` and the epoch's number) less the first
    `source.num_train % global_batch_size` examples of that order, so that an epoch is
    `epoch_steps` whole batches. A resumed run (`start_step` > 0) starts at its step's
    epoch and reads past only the steps of it already taken: never earlier epochs.
    """
    first_epoch, steps_taken = divmod(start_step, epoch_steps(source, global_batch_size))
    examples = source.train.cache() if data.cache else source.train
    buffer = min(data.shuffle_buffer, source.num_train)
    # dropped from the front of each pass, not its end: the pass is then read to its end,
    # which completes a cache in the first epoch whatever the shuffle buffer
    remainder = source.num_train % global_batch_size

    def epoch(number):
        # tf.data pairs a tensor seed with the graph-level seed, and fails where that is 0
        # (trainer.seed=0; tensorflow#17284); without one, the order depends on `seed` and
        # the epoch alone
        tf.compat.v1.get_default_graph().seed = None
        order_seed = tf.random.stateless_uniform(  # any int64: minval=maxval=None
            [], tf.stack([tf.cast(seed, tf.int64), number]), None, None, tf.int64
        )
        return examples.shuffle(buffer, seed=order_seed).skip(remainder)

    return (
        tf.data.Dataset.counter(first_epoch)
        .flat_map(epoch)
        .skip(steps_taken * global_batch_size)
        .enumerate(start=start_step * global_batch_size)
    )


def pipeline_part(global_batch_size, context=None):
    """How the input pipeline of `context` (a tf.distribute.InputContext; None: the only
    pipeline) divides a stream into global batches. Returns (ours, batch): ours(position,
    example), a tf.data filter, says whether the example at that position of the stream
    falls in this pipeline's part of its global batch (None: all do); batch is the size
    of the batches this pipeline yields, one replica's share of a global batch or,
    without `context`, all of it. Parts are consecutive: pipeline i takes positions
    [i * share, (i + 1) * share) of each global batch, share = global_batch_size /
    pipelines."""
    if context is None:
        return None, global_batch_size
    batch = context.get_per_replica_batch_size(global_batch_size)
    if context.num_input_pipelines == 1:
        return None, batch
    share = global_batch_size // context.num_input_pipelines

    def ours(position, _):
        return position % global_batch_size // share == context.input_pipeline_id

    return ours, batch


def train_pipeline(source, data, global_batch_size, seed, mean, std, start_step=0, context=None):
    """Batches of normalised float32 training images and int labels in `training_order`
    from step `start_step`, each example augmented as its position and `seed` say.

    Without `context`, whole global batches. With `context` (the tf.distribute.InputContext
    of one input pipeline, one per worker), the part of every global batch that its
    replicas train on, in batches of one replica's share (`pipeline_part`): the other
    workers' examples are passed over before they are decoded and augmented.
    """
    height, width, channels = source.image_shape
    a = data.augment
    ours, batch = pipeline_part(global_batch_size, context)

    def train_example(position, example):
        image, label = example
        crop_seed, augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), position]), 2)
        )
        if a.scale is not None:
            image = random_size_crop(
                image, crop_seed, (height, width), a.scale, a.aspect_ratio, channels
            )
        else:
            image = eval_image(image, (height, width), channels, crop=1.0)
        image = normalise(augment(image, augment_seed, a.pad_crop, a.flip), mean, std)
        if a.cutout:  # on the normalised image: the square takes the mean colour
            image = cutout(
                image, tf.random.experimental.stateless_fold_in(augment_seed, 1), a.cutout
            )
        return image, label

    train = training_order(source, data, global_batch_size, seed, start_step)
    if ours:
        train = train.filter(ours)
    train = train.map(train_example, num_parallel_calls=tf.data.AUTOTUNE)
    if source.encoded and data.bad_images == "skip":
        train = train.ignore_errors(log_warning=True)  # a file cut short fails only here
    return train.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def val_pipeline(source, data, global_batch_size, mean, std, context=None):
    """The validation set's `eval_examples` in its order, as batches of (image, label,
    weight): weight 1, then blank images of weight 0 up to a whole number of global
    batches. Without `context`, global batches; with `context`, one input pipeline's
    part of each (`pipeline_part`), the only part that pipeline decodes.

    The padding gives every pipeline as many batches, all of one shape: a worker left
    without images in the last global batch still takes its part in that step, and XLA
    compiles one evaluation step, not two.
    """
    ours, batch = pipeline_part(global_batch_size, context)
    pipelines = context.num_input_pipelines if context else 1
    steps = val_steps(source, global_batch_size)
    val = source.val
    if ours:
        val = val.enumerate().filter(ours).map(lambda _, example: example)
    label = val.element_spec[1]
    blank = (tf.zeros(source.image_shape), tf.zeros(label.shape, label.dtype), 0.0)
    val = (
        eval_examples(val, source, data, mean, std)
        .map(lambda image, label: (image, label, 1.0))
        # endless: the count stays right where bad_images=skip drops a file
        .concatenate(tf.data.Dataset.from_tensors(blank).repeat())
        .take(steps * global_batch_size // pipelines)
    )
    if data.cache and not source.encoded:  # after take: each epoch reads it to its end
        val = val.cache()
    return val.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def make_pipelines(source, data, global_batch_size, seed, start_step=0, strategy=None):
    """Returns (train, val, (mean, std)): the `train_pipeline` from step `start_step`
    and the `val_pipeline` repeated, in global batches, and the per-channel statistics
    they are normalised with. Both are endless, so that a run reads each through one
    iterator: a new iterator of a distributed data set sets its pipeline up anew, and
    TensorFlow logs a warning each time.

    With `strategy`, both are distributed over its replicas, by one input pipeline per
    worker that decodes only the part of each batch that its replicas take.
    """
    mean, std = normalisation(source, data)

    def train(context=None):
        return train_pipeline(source, data, global_batch_size, seed, mean, std, start_step, context)

    def val(context=None):
        # an epoch's evaluation takes `val_steps` batches: one pass
        return val_pipeline(source, data, global_batch_size, mean, std, context).repeat()

    if strategy is None:
        return train(), val(), (mean, std)
    return (
        strategy.distribute_datasets_from_function(train),
        strategy.distribute_datasets_from_function(val),
        (mean, std),
    )
