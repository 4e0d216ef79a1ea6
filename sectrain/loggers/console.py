"""The console: resolved config, model line, a progress bar per epoch, a row per epoch."""

from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

# (metric key, column title, format)
COLUMNS = (
    ("epoch", "epoch", "{:d}"),
    ("train_loss", "loss", "{:.4g}"),
    ("train_top1", "top-1", "{:.2%}"),
    ("val_loss", "val loss", "{:.4g}"),
    ("val_top1", "val top-1", "{:.2%}"),
    ("val_top5", "val top-5", "{:.2%}"),
    ("lr", "lr", "{:.3g}"),
    ("images_per_sec", "img/s", "{:,.0f}"),
    ("seconds", "sec", "{:.1f}"),
)
COLUMN_WIDTH = 9  # fixed, so that the rows printed one per epoch line up


def wide_console(stderr=False, quiet=False):
    """A rich console for sectrain's commands. Sent to a file or a pipe, rich would wrap
    lines and tables at 80 columns; 160 keeps a table row on one line there."""
    console = Console(stderr=stderr, quiet=quiet)
    if not console.is_terminal:
        console.width = 160
    return console


def log_handler(**options):
    """The logging handler of the console (conf/hydra/job_logging): rich's, on a
    `wide_console`. `options` are RichHandler's."""
    return RichHandler(console=wide_console(), **options)


class ConsoleLogger:
    def __init__(self, print_config=True, progress=True, console=None, quiet=False):
        self.console = console or wide_console(quiet=quiet)
        self.print_config = print_config
        self.show_progress = progress
        self._rows = 0

    def start(self, resolved_yaml, model_line):
        if self.print_config:
            self.console.print(Syntax(resolved_yaml, "yaml", theme="ansi_dark"))
        self.console.print(model_line, highlight=False, soft_wrap=True)

    @contextmanager
    def epoch_progress(self, epoch, epochs, steps):
        """Yields `update(done_steps, stats_text)` that advances this epoch's bar.

        Only where the console redraws in place: redirected to a file or pipe, a bar
        would leave an empty line between the epoch rows.
        """
        if not (self.show_progress and (self.console.is_interactive or self.console.is_jupyter)):
            yield lambda done, stats: None
            return
        progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        task = progress.add_task("train", total=steps, stats="")
        with progress:
            yield lambda done, stats: progress.update(task, completed=done, stats=stats)

    def epoch_end(self, row):
        table = Table(show_header=self._rows == 0, box=None, pad_edge=False)
        for _, title, _ in COLUMNS:
            table.add_column(title, justify="right", width=COLUMN_WIDTH)
        table.add_row(*(fmt.format(row[key]) for key, _, fmt in COLUMNS))
        self.console.print(table)
        self._rows += 1

    def end(self, message):
        self.console.print(message, highlight=False, soft_wrap=True)
