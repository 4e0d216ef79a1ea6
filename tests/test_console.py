"""The console logger's epoch rows, as a log file or a pipe receives them."""

import io

from rich.console import Console

from sectrain.loggers.console import ConsoleLogger, wide_console

ROW = dict(
    train_loss=1.0,
    train_top1=0.5,
    val_loss=1.2,
    val_top1=0.4,
    val_top5=0.9,
    lr=0.1,
    images_per_sec=100.0,
    seconds=1.5,
)


def test_redirected_output_is_a_header_and_one_line_per_epoch():
    out = io.StringIO()
    logger = ConsoleLogger(print_config=False, console=Console(file=out, width=120))
    for epoch in (1, 2, 3):
        with logger.epoch_progress(epoch, 3, steps=4) as update:
            update(4, "loss 1.0")
        logger.epoch_end({"epoch": epoch, **ROW})
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:2] == ["epoch", "loss"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert "40.00%" in lines[1]


def test_a_command_printing_to_a_file_keeps_a_140_character_line_whole(capsys):
    wide_console().print("configuration " * 10)
    assert len(capsys.readouterr().out.splitlines()) == 1
