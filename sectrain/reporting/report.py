"""`sectrain-report`: run folders -> a table of each configuration, mean +- std over its
seeds, beside the paper's numbers; Markdown, CSV and learning curves.

    sectrain -m +experiment=digits_se_vs_plain
    sectrain-report multirun/2026-11-25/10-00-00        # writes report.md, .csv, .png there
"""

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from sectrain.cli import command_parser, entry_point, fail
from sectrain.errors import ConfigError
from sectrain.loggers.console import wide_console
from sectrain.reporting.published import lookup
from sectrain.reporting.runs import configuration, find_runs


@dataclass
class Row:
    """One configuration: its runs and what they measured."""

    label: str
    runs: list
    published: object  # a `Published` row, or None

    @property
    def completed(self):
        return [run for run in self.runs if run.completed]

    def errors(self, metric):
        """% error of each completed run at its final epoch ("val_top1" or "val_top5")."""
        return [100 * (1 - run.summary["final"][metric]) for run in self.completed]

    @property
    def top1_error(self):
        return self.errors("val_top1")

    @property
    def top5_error(self):
        return self.errors("val_top5")

    def first(self, key):
        """A summary value of the first completed run (the same for all of its seeds)."""
        return self.completed[0].summary.get(key) if self.completed else None

    @property
    def parameters(self):
        return (self.first("parameters") or {}).get("trainable")

    @property
    def images_per_sec(self):
        values = [run.summary["images_per_sec"] for run in self.completed]
        return statistics.mean(values) if values else None


def group_runs(runs):
    """Rows of runs that share a configuration, labelled by the settings in which the
    configurations differ (in order of first appearance)."""
    groups = {}
    for run in runs:
        key = tuple(sorted(configuration(run).items(), key=lambda item: item[0]))
        groups.setdefault(key, []).append(run)
    settings = [dict(key) for key in groups]
    varying = sorted({k for s in settings for k in s if len({str(t.get(k)) for t in settings}) > 1})
    if "model.name" in varying:  # the model's own arguments go with its name
        varying = [k for k in varying if not k.startswith(("model.options.", "model.dropout"))]
    rows = []
    for setting, members in zip(settings, groups.values()):
        shown = varying or ["model.name", "model.attention.kind"]
        label = ", ".join(f"{k.removeprefix('model.')}={_text(setting.get(k))}" for k in shown)
        published = lookup(members[0].config.get("paper"), members[0].config)
        rows.append(Row(label, members, published))
    return rows


def _text(value):
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def mean_std(values):
    """'mean +- std' of a list (sample std; no std for one value); '' for none."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def difference(values, published):
    if not values or published is None:
        return ""
    return f"{statistics.mean(values) - published:+.2f}"


COLUMNS = (
    "configuration",
    "runs",
    "top-1 err %",
    "top-5 err %",
    "params M",
    "GFLOPs",
    "img/s",
    "paper top-1 / top-5",
    "Δ top-1",
)


def table_cells(row):
    """The report's columns for one row, as text."""
    p = row.published
    flops = row.first("flops")
    return [
        row.label,
        f"{len(row.completed)}/{len(row.runs)}",
        mean_std(row.top1_error),
        mean_std(row.top5_error),
        f"{row.parameters / 1e6:.3g}" if row.parameters else "",
        f"{flops / 1e9:.3f}" if flops else "",
        f"{row.images_per_sec:,.0f}" if row.images_per_sec else "",
        (f"{p.top1_error:.2f} / {p.top5_error:.2f}" if p.top5_error else f"{p.top1_error:.2f}")
        + f" ({p.table})"
        if p
        else "",
        difference(row.top1_error, p.top1_error if p else None),
    ]


def not_finished(runs):
    """(folder, status, epochs done, message) of each run that did not complete."""
    return [
        (
            str(run.path),
            run.status,
            len(run.epochs),
            run.message,
        )
        for run in runs
        if not run.completed
    ]


def write_markdown(rows, runs, path):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    lines += [
        "",
        "Errors are the final epoch's single-crop validation error, mean ± sample standard "
        "deviation over the completed runs (seeds) of each configuration.",
    ]
    failed = not_finished(runs)
    if failed:
        lines += ["", "Runs that did not complete:", ""]
        lines += [
            f"- `{folder}`: {status}, {done} epoch{'s' * (done != 1)}. {m}"
            for folder, status, done, m in failed
        ]
    path.write_text("\n".join(lines) + "\n")


def write_csv(rows, path):
    """One line per configuration, numbers unformatted."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "configuration",
                "runs_completed",
                "runs",
                "top1_error_mean",
                "top1_error_std",
                "top5_error_mean",
                "top5_error_std",
                "trainable_parameters",
                "flops",
                "images_per_sec",
                "paper_table",
                "paper_top1_error",
                "paper_top5_error",
            ]
        )
        for row in rows:
            p = row.published

            def stats(values):
                if not values:
                    return ["", ""]
                return [
                    statistics.mean(values),
                    statistics.stdev(values) if len(values) > 1 else "",
                ]

            writer.writerow(
                [row.label, len(row.completed), len(row.runs)]
                + stats(row.top1_error)
                + stats(row.top5_error)
                + [
                    row.parameters or "",
                    row.first("flops") or "",
                    row.images_per_sec or "",
                    p.table if p else "",
                    p.top1_error if p else "",
                    (p.top5_error or "") if p else "",
                ]
            )


def plot_curves(rows, path):
    """Training loss and validation top-1 error per epoch of every run, one colour per
    configuration, so that configurations (SE and plain) share the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # the legend goes below both plots (in two columns where the labels are short), and the
    # figure grows to hold it
    columns = 2 if max(len(row.label) for row in rows) <= 70 else 1
    height = 4.5 + 0.2 * math.ceil(len(rows) / columns)
    figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(12, height), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, row in enumerate(rows):
        colour = colours[index % len(colours)]
        for number, run in enumerate(r for r in row.runs if r.epochs):
            epochs = [e["epoch"] for e in run.epochs]
            style = {
                "color": colour,
                "label": row.label if number == 0 else None,
                "marker": "o" if len(epochs) < 10 else None,  # so that one epoch shows
            }
            loss_axis.plot(epochs, [e["train_loss"] for e in run.epochs], **style)
            error_axis.plot(epochs, [100 * (1 - e["val_top1"]) for e in run.epochs], **style)
    loss_axis.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Training loss")
    error_axis.set(xlabel="epoch", ylabel="top-1 error (%)", title="Validation top-1 error")
    handles, labels = error_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize="small")
    for axis in (loss_axis, error_axis):
        axis.grid(alpha=0.3)
        axis.set_xlim(left=0)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(paths, out_dir, console):
    """Reads the runs under `paths`, prints the table and writes report.md, report.csv
    and curves.png into `out_dir`. Returns the rows."""
    runs = find_runs(paths)
    if not runs:
        raise ConfigError(f"no sectrain runs (folders with config.yaml) in {', '.join(paths)}")
    rows = group_runs(runs)
    table = Table(title=f"{len(runs)} runs, {len(rows)} configurations")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "configuration" else "right")
    table.columns[0].overflow = "fold"
    for row in rows:
        table.add_row(*table_cells(row))
    console.print(table)
    failed = not_finished(runs)
    if failed:
        unfinished = Table(title="Runs that did not complete", title_style="bold yellow")
        for column in ("run folder", "status", "epochs", "message"):
            unfinished.add_column(column)
        for folder, status, done, message in failed:
            unfinished.add_row(folder, status, str(done), message)
        console.print(unfinished)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_markdown(rows, runs, out_dir / "report.md")
    write_csv(rows, out_dir / "report.csv")
    plot_curves(rows, out_dir / "curves.png")
    console.print(f"Written: {out_dir / 'report.md'}, report.csv, curves.png", highlight=False)
    return rows


@entry_point
def main(argv=None):
    parser = command_parser("sectrain-report", __doc__)
    parser.add_argument("paths", nargs="+", help="run folders or folders holding runs")
    parser.add_argument(
        "--out", help="folder for report.md, report.csv, curves.png (default: the first PATH)"
    )
    args = parser.parse_intermixed_args(argv)
    out_dir = Path(args.out or args.paths[0])
    for path in args.paths:
        if not Path(path).is_dir():
            fail(f"{path!r} is not a folder (give run folders or folders holding runs)")
    try:
        report(args.paths, out_dir, wide_console())
    except (ConfigError, OSError) as error:
        fail(error)
    return 0
