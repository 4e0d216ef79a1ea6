"""`sectrain-eval`: a trained model on a data split: loss, top-1, top-5, accuracy per
class and a confusion matrix.

    sectrain-eval RUN_DIR                      # the run's own validation split
    sectrain-eval RUN_DIR data.path=/other     # the run's config with overrides
    sectrain-eval model.keras data=cifar10     # a bare .keras file on any data set
    sectrain-eval RUN_DIR data.image_size=320  # at another input size
    sectrain-eval RUN_DIR --excitations        # and the SE gates per class and block
"""

import csv
import json
from pathlib import Path

from rich.table import Table

from sectrain.cli import command_parser, entry_point, fail
from sectrain.errors import ConfigError
from sectrain.loggers.console import wide_console


def evaluate(trained, data, split, batch_size=256, forward=None):
    """Returns the metrics of `trained` (a `TrainedModel`) on `split` ("val" or "train")
    of `data` (a `DataConfig`), at `data.image_size`, with the confusion matrix (rows:
    true classes).

    `forward(images, labels)`, if given, returns the logits of each batch in place of the
    model's own inference: an `ExcitationMeans`, which also records the gates.
    """
    import numpy as np
    import tensorflow as tf

    from sectrain.data.pipeline import eval_pipeline, normalisation
    from sectrain.data.sources import load_source

    source = load_source(data)
    height, width, channels = source.image_shape
    if channels != trained.image_shape[-1]:
        raise ConfigError(
            f"data: images have {channels} channel(s), the model takes {trained.image_shape[-1]}"
        )
    trained = trained.at_image_size(height, width)
    num_classes = trained.model.output_shape[-1]
    if source.num_classes != num_classes:
        raise ConfigError(f"data: {source.num_classes} classes, the model has {num_classes}")
    mean, std = trained.mean, trained.std
    if mean is None:  # a bare .keras file: normalise as training did
        mean, std = normalisation(source, data)
    dataset = eval_pipeline(
        source.val if split == "val" else source.train, source, data, mean, std, batch_size
    )
    logits, labels = [], []
    for images, batch_labels in dataset:
        batch_logits = trained.logits(images) if forward is None else forward(images, batch_labels)
        logits.append(batch_logits.numpy())
        labels.append(batch_labels.numpy())
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    ranked = np.argsort(-logits, axis=1)
    k = min(5, num_classes)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    class_names = trained.class_names or source.class_names
    per_class = [
        {
            "class": name,
            "images": int(confusion[i].sum()),
            "top1": float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None,
        }
        for i, name in enumerate(class_names)
    ]
    return {
        "split": split,
        "image_size": [height, width],
        "images": int(len(labels)),
        "loss": float(np.mean(loss)),
        "top1": float(np.mean(ranked[:, 0] == labels)),
        "top5": float(np.mean((ranked[:, :k] == labels[:, None]).any(axis=1))),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def plot_confusion(metrics, path):
    """Writes the confusion matrix as a PNG heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    confusion = np.array(metrics["confusion"])
    names = [row["class"] for row in metrics["per_class"]]
    size = min(4 + 0.35 * len(names), 20)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    if len(names) <= 40:  # beyond that, labels would overlap
        axes.set_xticks(range(len(names)), names, rotation=90)
        axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{metrics['split']}: top-1 {metrics['top1']:.2%} of {metrics['images']} images")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report_excitations(excitations, metrics, path, console):
    """Prints a table of the blocks' gates, and writes them to `path`.npz and .png."""
    from sectrain.inference.excitations import (
        block_statistics,
        plot_excitations,
        save_excitations,
    )

    means, counts = excitations.results()
    class_names = [row["class"] for row in metrics["per_class"]]
    table = Table(title="attention blocks: mean gate, and its spread across classes")
    for column in ("block", "channels", "mean gate", "class spread"):
        table.add_column(column, justify="left" if column == "block" else "right")
    for row in block_statistics(means, counts):
        table.add_row(
            row["block"],
            str(row["channels"]),
            f"{row['mean_gate']:.3f}",
            f"{row['class_spread']:.3f}",
        )
    console.print(table)
    save_excitations(means, counts, class_names, path.with_suffix(".npz"))
    plot_excitations(means, counts, class_names, path.with_suffix(".png"))


@entry_point
def main(argv=None):
    parser = command_parser("sectrain-eval", __doc__)
    parser.add_argument("target", help="a run folder or a .keras file")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for sectrain")
    parser.add_argument("--split", choices=["val", "train"], default="val")
    parser.add_argument("--output", help="folder for the results (default: RUN/eval)")
    parser.add_argument(
        "--excitations",
        action="store_true",
        help="also record each attention block's mean gate per channel and class "
        "(excitations_SPLIT.npz and .png, as the SE paper's Figure 6)",
    )
    args = parser.parse_intermixed_args(argv)
    target = Path(args.target)
    try:
        from sectrain.cli import check_overrides, compose_config
        from sectrain.config import validate
        from sectrain.inference.artifacts import load_trained, run_folder, run_overrides

        output = Path(args.output) if args.output else run_folder(target) / "eval"

        check_overrides(args.overrides)
        # the run's own overrides, then these (later ones win); before TensorFlow loads
        config = validate(compose_config(run_overrides(target) + args.overrides))
        trained = load_trained(target, as_built=args.excitations)
        excitations = None
        if args.excitations:
            from sectrain.inference.excitations import ExcitationMeans

            excitations = ExcitationMeans(trained.model)
        metrics = evaluate(trained, config.data, args.split, forward=excitations)
    except ConfigError as error:
        fail(error)

    console = wide_console()
    height, width = metrics["image_size"]
    own_size = (height, width) == trained.image_shape[:2]
    # results at a size other than the model's own go beside those, not over them
    name = args.split if own_size else f"{args.split}_{height}x{width}"
    table = Table(title=f"{target} on {config.data.name} {args.split}, {height}x{width} images")
    for column in ("class", "images", "top-1"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in metrics["per_class"]:
        accuracy = "-" if row["top1"] is None else f"{row['top1']:.2%}"
        table.add_row(row["class"], f"{row['images']:,}", accuracy)
    console.print(table)
    console.print(
        f"loss {metrics['loss']:.4f}  top-1 {metrics['top1']:.2%}  top-5 {metrics['top5']:.2%}  "
        f"({metrics['images']:,} images)",
        highlight=False,
    )
    if not own_size:
        trained_height, trained_width, _ = trained.image_shape
        console.print(f"(the model trained on {trained_height}x{trained_width} images)")
    output.mkdir(parents=True, exist_ok=True)
    (output / f"eval_{name}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with (output / f"per_class_{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "images", "top1"])
        writer.writeheader()
        writer.writerows(metrics["per_class"])
    plot_confusion(metrics, output / f"confusion_{name}.png")
    if excitations:
        report_excitations(excitations, metrics, output / f"excitations_{name}", console)
    console.print(f"results in {output}", highlight=False)
    return 0
