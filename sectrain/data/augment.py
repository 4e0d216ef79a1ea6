"""Training-time augmentation. Every random op is stateless, seeded by (seed, index of
the example in the training stream), so the same run draws the same crops and flips."""

import tensorflow as tf

from sectrain.data.images import decode_full, to_float


def random_size_crop(image, seed, size, scale, aspect_ratio, channels):
    """The ImageNet recipe's crop: a window of random area (a `scale` fraction of the
    image) and aspect ratio, resized to `size`. Returns float32 in [0, 1].

    `image` is a decoded image (any size) or encoded bytes; a JPEG is decoded only
    inside the window, which is what keeps a full-size ImageNet pipeline fast.
    """
    encoded = image.dtype == tf.string
    if encoded:
        shape = tf.cond(
            tf.io.is_jpeg(image),
            lambda: tf.image.extract_jpeg_shape(image),
            lambda: tf.shape(decode_full(image, channels), out_type=tf.int32),
        )
    else:
        shape = tf.shape(image)
    begin, window, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,  # no box given: the whole image is the box
    )
    if encoded:
        crop_window = tf.stack([begin[0], begin[1], window[0], window[1]])
        image = tf.cond(
            tf.io.is_jpeg(image),
            lambda: tf.image.decode_and_crop_jpeg(image, crop_window, channels=channels),
            lambda: tf.slice(decode_full(image, channels), begin, window),
        )
    else:
        image = tf.slice(image, begin, window)
    return tf.image.resize(to_float(image), size)


def augment(image, seed, pad_crop, flip):
    """Zero-pads by `pad_crop` pixels and crops back at random; flips left-right at random.

    Args:
        image: float32 tensor (height, width, channels).
        seed: int32 tensor of shape (2,), the example's seed.
        pad_crop: int, padding in pixels (0: no crop).
        flip: bool, random horizontal flip.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if pad_crop:
        shape = tf.shape(image)
        padded = tf.image.resize_with_crop_or_pad(
            image, shape[0] + 2 * pad_crop, shape[1] + 2 * pad_crop
        )
        image = tf.image.stateless_random_crop(padded, shape, seed=crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def cutout(image, seed, size):
    """Zeroes a `size` x `size` square at a random centre, clipped at the image's borders
    (DeVries and Taylor, "Improved Regularization of Convolutional Neural Networks with
    Cutout", 2017, https://arxiv.org/abs/1708.04552). Applied to the normalised image, the
    square takes the data set's mean colour.

    Args:
        image: float32 tensor (height, width, channels).
        seed: int32 tensor of shape (2,), the example's seed.
        size: int, the side of the square in pixels.
    """
    shape = tf.shape(image)
    centre = tf.cast(
        tf.random.stateless_uniform([2], seed) * tf.cast(shape[:2], tf.float32), tf.int32
    )
    rows = tf.range(shape[0])[:, None] - centre[0]
    cols = tf.range(shape[1])[None, :] - centre[1]
    half = size // 2
    inside = (rows >= -half) & (rows < size - half) & (cols >= -half) & (cols < size - half)
    return image * tf.cast(~inside, image.dtype)[:, :, None]
