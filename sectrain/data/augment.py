"""Training-time augmentation. Every random op is stateless, seeded by (seed, index of
the example in the training stream), so the same run draws the same crops and flips."""

import tensorflow as tf


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
