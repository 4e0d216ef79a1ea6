"""Image operations shared by training, evaluation and the inference commands."""

import tensorflow as tf


def to_float(image):
    """uint8 images scale to [0, 1]; float images are taken as already in [0, 1]."""
    return tf.image.convert_image_dtype(image, tf.float32)


def decode_full(encoded, channels=3):
    """JPEG/PNG/BMP/GIF bytes (a GIF's first frame) -> uint8 image at its own size."""
    return tf.io.decode_image(encoded, channels=channels, expand_animations=False)


def centre_crop(image, fraction):
    """The central square of side `fraction` x the short side (image or batch);
    `fraction` 1: the image as it is."""
    if fraction >= 1.0:
        return image
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    return tf.image.crop_to_bounding_box(
        image, (height - side) // 2, (width - side) // 2, side, side
    )


def decode_image(encoded, size, channels=3, crop=1.0):
    """Encoded bytes -> uint8 image of `size`: the central `crop` square (see
    `centre_crop`) or, with crop 1, the whole image resized."""
    image = tf.image.resize(centre_crop(decode_full(encoded, channels), crop), size)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def eval_image(image, size, channels, crop):
    """What evaluation feeds the model, before normalisation: float32 in [0, 1] of
    `size`, from encoded bytes or a decoded image; the central `crop` of it."""
    if image.dtype == tf.string:
        return to_float(decode_image(image, size, channels, crop))
    if crop >= 1.0 and tuple(image.shape[-3:-1]) == tuple(size):
        return to_float(image)
    return tf.image.resize(to_float(centre_crop(image, crop)), size)
