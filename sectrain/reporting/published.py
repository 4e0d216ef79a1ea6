"""The published results sectrain reproduces (Hu et al., TPAMI version, arXiv 1709.01507
v4; see the README). A run is compared with the row whose settings it has: each row lists
the config values (dotted keys) that identify it within its set."""

from dataclasses import dataclass, field

from sectrain.models import MODELS


@dataclass(frozen=True)
class Published:
    table: str  # where the paper prints it
    config: dict = field(hash=False)  # dotted key -> the value a matching run has
    top1_error: float = 0.0  # %
    top5_error: float | None = None  # %; the CIFAR tables give top-1 only


IMAGENET = "imagenet2012"  # the TFDS name


def _plain_and_se(table, settings, plain, se):
    """A network's two rows, without attention and with SE; `settings` identify the
    network and data, `plain` and `se` are its errors (top-1, or top-1 and top-5)."""
    return [
        Published(table, {**settings, "model.attention.kind": kind}, *errors)
        for kind, errors in (("none", plain), ("se", se))
    ]


def _imagenet():
    rows = []
    for table, model, options, plain, se in (
        ("Table 2", "resnet50", {}, (24.80, 7.48), (23.29, 6.62)),
        ("Table 2", "resnet101", {}, (23.17, 6.52), (22.38, 6.07)),
        ("Table 2", "resnet152", {}, (22.42, 6.34), (21.57, 5.73)),
        ("Table 2", "resnext50_32x4d", {}, (22.11, 5.90), (21.10, 5.49)),
        ("Table 2", "resnext101_32x4d", {}, (21.18, 5.57), (20.70, 5.01)),
        # the paper adds batch norm to VGG-16
        ("Table 2", "vgg16", {"batch_norm": True}, (27.02, 8.81), (25.22, 7.70)),
        ("Table 2", "bn_inception", {}, (25.38, 7.89), (24.23, 7.14)),
        ("Table 2", "inception_resnet_v2", {}, (20.37, 5.21), (19.80, 4.79)),
        ("Table 3", "mobilenet", {"alpha": 1.0}, (28.4, 9.4), (25.3, 7.7)),
        ("Table 3", "shufflenet", {"groups": 3}, (32.6, 12.5), (31.0, 11.1)),
    ):
        settings = {"model.name": model, "data.name": IMAGENET}
        settings |= {f"model.options.{k}": v for k, v in options.items()}
        rows += _plain_and_se(table, settings, plain, se)
    # SENet-154 at 224 (at 320: 17.28 / 3.79, which sectrain-eval measures)
    senet = {"model.name": "senet154", "data.name": IMAGENET, "model.attention.kind": "se"}
    return [*rows, Published("Table 8", senet, 18.68, 4.47)]


def _cifar():
    rows = []
    for model, extra, table_4, table_5 in (
        ("cifar_resnet110", {}, (6.37, 5.21), (26.88, 23.85)),
        ("preact_resnet164", {}, (5.46, 4.39), (24.33, 21.31)),
        (
            "wrn",
            {"model.options.depth": 16, "model.options.width": 8},
            (4.27, 3.88),
            (20.43, 19.14),
        ),
        # the Shake-Shake networks, with Cutout, each on one data set
        ("shake_shake26_2x96d", {"data.augment.cutout": 16}, (2.56, 2.12), None),
        ("shake_even29_2x4x64d", {"data.augment.cutout": 8}, None, (15.85, 15.41)),
    ):
        for table, data, errors in (
            ("Table 4", "cifar10", table_4),
            ("Table 5", "cifar100", table_5),
        ):
            if errors:
                settings = {"model.name": model, "data.name": data, **extra}
                rows += _plain_and_se(table, settings, errors[:1], errors[1:])
    return rows


SE_DEFAULTS = {
    "ratio": 16,
    "squeeze": "avg",
    "gate": "sigmoid",
    "stages": None,
    "placement": "standard",
}


def _ablation():
    base = {"model.name": "resnet50", "data.name": IMAGENET}
    rows = [Published("Table 10", {**base, "model.attention.kind": "none"}, 23.30, 6.55)]
    for table, changes, errors in (
        ("Table 10", {"ratio": 2}, (22.29, 6.00)),
        ("Table 10", {"ratio": 4}, (22.25, 6.09)),
        ("Table 10", {"ratio": 8}, (22.26, 5.99)),
        ("Tables 10-16", {}, (22.28, 6.03)),
        ("Table 10", {"ratio": 32}, (22.72, 6.20)),
        ("Table 11", {"squeeze": "max"}, (22.57, 6.09)),
        ("Table 16", {"squeeze": "none"}, (22.93, 6.39)),
        ("Table 12", {"gate": "relu"}, (23.47, 6.98)),
        ("Table 12", {"gate": "tanh"}, (23.00, 6.38)),
        ("Table 13", {"stages": [2]}, (23.03, 6.48)),
        ("Table 13", {"stages": [3]}, (23.04, 6.32)),
        ("Table 13", {"stages": [4]}, (22.68, 6.22)),
        ("Table 14", {"placement": "pre"}, (22.23, 6.00)),
        ("Table 14", {"placement": "post"}, (22.78, 6.35)),
        ("Table 14", {"placement": "identity"}, (22.20, 6.15)),
        ("Table 15", {"placement": "3x3"}, (22.48, 6.02)),
    ):
        attention = {**SE_DEFAULTS, **changes, "kind": "se"}
        config = {**base, **{f"model.attention.{k}": v for k, v in attention.items()}}
        rows.append(Published(table, config, *errors))
    return rows


PUBLISHED = {"imagenet": _imagenet(), "cifar": _cifar(), "ablation": _ablation()}
PAPER_SETS = tuple(PUBLISHED)


def lookup(paper, config):
    """The published row of set `paper` that `config` (a nested dict) matches, or None."""
    # model.options shape the network: the run's options with the builder's defaults
    # filled in decide, and one that differs from its default must be listed by the row
    name = _value(config, "model.name")
    options = _value(config, "model.options") or {}
    changed = options
    if name in MODELS:
        spec = MODELS.get(name)
        options, changed = spec.filled(options), spec.changed(options)
    settings = {**config, "model": {**config.get("model", {}), "options": options}}
    for row in PUBLISHED.get(paper, []):
        listed = {key.split(".")[-1] for key in row.config if key.startswith("model.options.")}
        if changed.keys() <= listed and all(
            _value(settings, key) == wanted for key, wanted in row.config.items()
        ):
            return row
    return None


def _value(config, key):
    """The value at dotted `key` of the nested dict `config`, or None."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
