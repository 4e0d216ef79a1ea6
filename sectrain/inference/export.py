"""`sectrain-export`: a run's model as a TensorFlow SavedModel for TF Serving, with the
preprocessing inside: no sectrain (nor Keras) code is needed to load and call it.

Signatures:
    serving_default(image_bytes: string[N]) -> probabilities, class_index, class_name
    predict_images(images: float32[N, H, W, C] in [0, 1], any size) -> the same
"""

from pathlib import Path

from rich.console import Console

from sectrain.cli import command_parser, entry_point, fail
from sectrain.errors import ConfigError


def export(trained, path):
    """Writes the SavedModel of a `TrainedModel` to `path`."""
    import keras
    import tensorflow as tf

    model = trained.model
    channels = trained.image_shape[-1]
    class_names = tf.constant(trained.class_names)

    def outputs(inputs):
        probabilities = tf.nn.softmax(model(inputs, training=False))
        index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "class_index": index,
            "class_name": tf.gather(class_names, index),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda image_bytes: outputs(trained.read_images(image_bytes)),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        "predict_images",
        lambda images: outputs(trained.read_images(images)),
        input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, name="images")],
    )
    archive.write_out(str(path), verbose=False)


@entry_point
def main(argv=None):
    parser = command_parser("sectrain-export", __doc__)
    parser.add_argument("run", help="a run folder (with model.keras and summary.json)")
    parser.add_argument("--output", help="SavedModel folder (default: RUN/saved_model)")
    args = parser.parse_intermixed_args(argv)
    output = Path(args.output) if args.output else Path(args.run) / "saved_model"
    try:
        # a new or empty folder, or an earlier export; never e.g. the run folder itself
        replaceable = not output.exists() or (output / "saved_model.pb").is_file()
        if not replaceable and (not output.is_dir() or any(output.iterdir())):
            raise ConfigError(f"--output {str(output)!r} exists and is not a SavedModel to replace")
        from sectrain.inference.artifacts import load_trained

        trained = load_trained(args.run)
        if trained.class_names is None or trained.mean is None:
            raise ConfigError(f"{args.run!r}: export needs the run folder (its summary.json)")
        export(trained, output)
    except ConfigError as error:
        fail(error)
    Console().print(f"SavedModel written to {output}", highlight=False, soft_wrap=True)
    return 0
