"""`sectrain-predict`: the top-k classes of image files, from a run folder."""

import csv
import json
import logging
from pathlib import Path

from rich.table import Table

from sectrain.cli import command_parser, entry_point, fail, positive_int
from sectrain.errors import ConfigError
from sectrain.loggers.console import wide_console

log = logging.getLogger("sectrain")


def predict(trained, files, top_k, batch_size=64):
    """Returns one row per readable file: {"file", "top": [(class, probability), ...]}
    and the files that could not be decoded."""
    import tensorflow as tf

    inputs, readable, unreadable = [], [], []
    for path in files:
        try:
            inputs.append(trained.read_images(tf.constant([path.read_bytes()]))[0])
            readable.append(path)
        except tf.errors.InvalidArgumentError:
            unreadable.append(path)
    rows = []
    for start in range(0, len(inputs), batch_size):
        logits = trained.logits(tf.stack(inputs[start : start + batch_size]))
        probabilities = tf.nn.softmax(logits).numpy()
        for path, p in zip(readable[start : start + batch_size], probabilities):
            best = p.argsort()[::-1][:top_k]
            rows.append(
                {"file": str(path), "top": [(trained.class_names[i], float(p[i])) for i in best]}
            )
    return rows, unreadable


@entry_point
def main(argv=None):
    parser = command_parser("sectrain-predict", __doc__)
    parser.add_argument("run", help="a run folder (with model.keras and summary.json)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument(
        "--output", help="folder for predictions.csv/.json (default: RUN/predictions)"
    )
    args = parser.parse_intermixed_args(argv)
    try:
        from sectrain.inference.artifacts import image_files, load_trained

        files = image_files(args.images)
        trained = load_trained(args.run)
        if trained.class_names is None or trained.mean is None:
            raise ConfigError(f"{args.run!r}: prediction needs the run folder (its summary.json)")
        rows, unreadable = predict(trained, files, args.top_k)
    except ConfigError as error:
        fail(error)
    console = wide_console()
    for path in unreadable:
        console.print(f"[yellow]skipped[/] {path}: not a decodable image", highlight=False)
    if not rows:
        fail(f"none of the {len(files)} files is a decodable image")
    k = min(args.top_k, len(trained.class_names))
    table = Table(title=f"Top-{k} classes")
    table.add_column("file")
    for rank in range(1, k + 1):
        table.add_column(f"#{rank}")
    for row in rows:
        table.add_row(row["file"], *(f"{name} {p:.1%}" for name, p in row["top"]))
    console.print(table)

    output = Path(args.output) if args.output else Path(args.run) / "predictions"
    output.mkdir(parents=True, exist_ok=True)
    with (output / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["file", *(f"{key}_{r}" for r in range(1, k + 1) for key in ("class", "probability"))]
        )
        for row in rows:
            writer.writerow([row["file"], *(v for pair in row["top"] for v in pair)])
    (output / "predictions.json").write_text(json.dumps(rows, indent=2) + "\n")
    images = "1 image" if len(rows) == 1 else f"{len(rows)} images"
    console.print(f"{images}; predictions in {output}", highlight=False)
    return 0
