"""`sectrain-models`: every registered model's parameters and FLOPs, plain and with
attention, built at the input size and class count it is designed for."""

import fnmatch
import json
import sys

from omegaconf import OmegaConf
from rich.table import Table

from sectrain.cli import (
    CONFIG_DIR,
    command_parser,
    config_groups,
    entry_point,
    fail,
    positive_int,
)
from sectrain.config import ATTENTION_KINDS, RATIO_KINDS, AttentionConfig
from sectrain.loggers.console import wide_console
from sectrain.models import MODELS


def describe(name, attention):
    """Builds model `name` plain and with `attention`; returns its figures as a dict."""
    import keras

    from sectrain.models import build_model
    from sectrain.models.profile import count_flops, count_parameters

    spec = MODELS.get(name)
    shape = (spec.input_size, spec.input_size, 3)
    row = {"model": name, "input_size": spec.input_size, "num_classes": spec.num_classes}
    for label, settings in (("plain", None), ("attention", attention)):
        keras.backend.clear_session()
        model = build_model(
            name, num_classes=spec.num_classes, input_shape=shape, attention=settings
        )
        trainable, total = count_parameters(model)
        row[label] = {"trainable": trainable, "total": total, "flops": count_flops(model)}
    return row


def matching_models(pattern):
    """Registered model names matching the glob `pattern`, or else the models of the
    matching configs in conf/model (`se_resnet*` -> resnet18, ..., resnet152)."""
    names = MODELS.names(pattern)
    if names:
        return names
    configs = fnmatch.filter(config_groups()["model"], pattern)
    return sorted({OmegaConf.load(CONFIG_DIR / "model" / f"{c}.yaml").name for c in configs})


@entry_point
def main(argv=None):
    parser = command_parser("sectrain-models", __doc__)
    parser.add_argument(
        "patterns",
        nargs="*",
        default=["*"],
        metavar="pattern",
        help="registered model names or model configs (globs; all models if none)",
    )
    kinds = [kind for kind in ATTENTION_KINDS if kind != "none"]
    parser.add_argument(
        "--attention", default="se", choices=kinds, help="attention kind to compare (se)"
    )
    parser.add_argument(
        "--ratio",
        type=positive_int,
        help=f"reduction ratio of {' and '.join(RATIO_KINDS)} blocks ({AttentionConfig.ratio})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_intermixed_args(argv)
    names = []
    for pattern in args.patterns:
        matches = matching_models(pattern)
        if not matches:
            fail(
                f"no registered model or model config matches {pattern!r}. "
                f"Registered: {', '.join(MODELS.names())}."
            )
        names += [name for name in matches if name not in names]
    takes_ratio = args.attention in RATIO_KINDS
    if args.ratio and not takes_ratio:
        fail(f"--ratio: {args.attention} blocks take no reduction ratio")
    attention = {"kind": args.attention, "ratio": args.ratio or AttentionConfig.ratio}
    rows = []
    console = wide_console(stderr=args.json)
    with console.status("building models") as status:
        for number, name in enumerate(names, 1):
            status.update(f"building {name} ({number} of {len(names)})")
            rows.append(describe(name, attention))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    settings = f" (ratio {attention['ratio']})" if takes_ratio else ""
    table = Table(title=f"Registered models, plain and with {args.attention}{settings}")
    for column in (
        "model",
        "input",
        "params",
        "total",
        "GFLOPs",
        f"{args.attention} params",
        "total",
        "GFLOPs",
        "added",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        plain, attended = row["plain"], row["attention"]
        table.add_row(
            row["model"],
            f"{row['input_size']}",
            f"{plain['trainable']:,}",
            f"{plain['total']:,}",
            f"{plain['flops'] / 1e9:.3f}",
            f"{attended['trainable']:,}",
            f"{attended['total']:,}",
            f"{attended['flops'] / 1e9:.3f}",
            f"{(attended['trainable'] - plain['trainable']) / plain['trainable']:+.1%}",
        )
    console.print(table)
    console.print(
        "params: trainable parameters; total: Keras count_params(), with batch-norm "
        "statistics; GFLOPs: multiply-adds per image.",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
