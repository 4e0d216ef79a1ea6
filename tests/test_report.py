"""sectrain-report over real runs: completed seeds of two configurations, a diverged
run, one killed before it finished and one refused by a configuration error."""

import csv
import json
import shutil
import statistics
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from sectrain.reporting.report import group_runs
from sectrain.reporting.report import main as report_main
from sectrain.reporting.runs import Run
from sectrain.train import RunStopped, train
from tests.helpers import RESNET8, make_config
from tests.test_cli import imported_tensorflow, sectrain
from tests.test_faults import DIVERGING

pytestmark = pytest.mark.xdist_group("report")  # `runs` trains once
QUICK = (RESNET8, "trainer.epochs=1", "trainer.global_batch_size=256", "logger.tensorboard=false")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A multirun-like folder: SE and plain, two seeds each, and one of them killed
    before its end; and a folder with a diverged run."""
    root = tmp_path_factory.mktemp("sweep")
    for number, (attention, seed) in enumerate([("se", 0), ("se", 1), ("none", 0), ("none", 1)]):
        train(
            make_config(f"model/attention={attention}", f"trainer.seed={seed}", *QUICK),
            root / str(number),
        )
    with pytest.raises(RunStopped):
        train(make_config(*DIVERGING, "logger.tensorboard=false"), root.parent / "diverged")
    # a run killed before its end, while it wrote a line of metrics: no summary.json
    shutil.copytree(root / "0", root / "5")
    (root / "5" / "summary.json").unlink()
    with (root / "5" / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"epoch": 2, "train_lo')
    # a run whose summary.json something other than sectrain cut short
    shutil.copytree(root / "0", root.parent / "damaged")
    (root.parent / "damaged" / "summary.json").write_text('{"status": "compl')
    # a run that a mistake found once its folder was made stopped: no config.yaml of its own
    refused = sectrain("model.init_from=missing.keras", f"hydra.run.dir={root.parent / 'refused'}")
    assert refused.returncode == 2, refused.stderr
    return root


def summaries(root, numbers):
    return [json.loads((root / str(n) / "summary.json").read_text()) for n in numbers]


def test_report_table_has_mean_and_std_over_seeds(runs, capsys):
    assert report_main([str(runs)]) == 0
    printed = capsys.readouterr().out
    with open(runs / "report.csv") as f:
        rows = {row["configuration"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"attention.kind=se", "attention.kind=none"}
    for label, numbers in (("attention.kind=se", [0, 1]), ("attention.kind=none", [2, 3])):
        errors = [100 * (1 - s["final"]["val_top1"]) for s in summaries(runs, numbers)]
        row = rows[label]
        assert float(row["top1_error_mean"]) == pytest.approx(statistics.mean(errors))
        assert float(row["top1_error_std"]) == pytest.approx(statistics.stdev(errors))
        assert (
            int(row["trainable_parameters"])
            == summaries(runs, numbers)[0]["parameters"]["trainable"]
        )
        assert float(row["flops"]) > 0 and float(row["images_per_sec"]) > 0
    # the killed run is a repeat of SE
    assert rows["attention.kind=se"]["runs"] == "3"
    assert rows["attention.kind=se"]["runs_completed"] == "2"
    se_params = int(rows["attention.kind=se"]["trainable_parameters"])
    assert se_params > int(rows["attention.kind=none"]["trainable_parameters"])
    assert "unfinished" in printed


def test_report_lists_runs_that_did_not_complete(runs, capsys):
    diverged, damaged, refused = (runs.parent / name for name in ("diverged", "damaged", "refused"))
    report_main([str(runs), *map(str, (diverged, damaged, refused)), "--out", str(runs / "report")])
    assert "diverged" in capsys.readouterr().out
    markdown = (runs / "report" / "report.md").read_text()
    assert "| configuration | runs | top-1 err % | top-5 err % |" in markdown
    # SE, plain, the diverged lr 100 one, the refused one with its model.init_from
    assert markdown.count("\n| attention.kind=") == 4
    failed = markdown.split("Runs that did not complete:")[1]
    assert f"`{diverged}`: diverged" in failed and "the training loss became" in failed
    assert f"`{runs / '5'}`: unfinished, 1 epoch." in failed
    assert f"`{damaged}`: damaged summary.json, 1 epoch." in failed
    assert f"`{refused}`: not started, 0 epochs. model.init_from: 'missing.keras' is " in failed
    png = (runs / "report" / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_the_report_command_reads_runs_without_loading_tensorflow(runs):
    main = "import sys; from sectrain.reporting.report import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", main, str(runs), "--out", str(runs / "cli")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "2 configurations" in result.stdout
    assert not imported_tensorflow(result)  # matplotlib loads a lazy one it finds


def test_report_without_runs_is_an_error(tmp_path, capsys):
    # config.yaml files of other programs are not runs
    (tmp_path / "hydra_app").mkdir()
    (tmp_path / "hydra_app" / "config.yaml").write_text("defaults:\n- _self_\n- group: null\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path)])
    assert stop.value.code == 2
    assert "no sectrain runs" in capsys.readouterr().err


def test_an_option_given_its_default_value_is_the_same_configuration(tmp_path):
    def run(name, **options):
        config = OmegaConf.to_container(OmegaConf.structured(make_config()))
        config["model"]["options"] = options
        return Run(tmp_path / name, config, None)

    rows = group_runs([run("a"), run("b", stride_on_3x3=False), run("c", stride_on_3x3=True)])
    assert [(row.label, len(row.runs)) for row in rows] == [
        ("options.stride_on_3x3=False", 2),
        ("options.stride_on_3x3=True", 1),
    ]
    older = run("d")  # made before sectrain had trainer.ema_decay: the same configuration
    del older.config["trainer"]["ema_decay"]
    assert len(group_runs([run("a"), older])) == 1


def test_a_logged_error_says_why_a_run_stopped_unless_a_later_attempt_trained(tmp_path):
    error = "[2026-01-02 10:00:00,000][sectrain.log_file][ERROR] error: data.path: gone\nagain\n"
    epoch = '[2026-01-02 11:00:00,000][sectrain.metrics][INFO] {"epoch": 1}\n'
    for log, message in ((epoch + error, "data.path: gone again"), (error + epoch, "")):
        (tmp_path / "sectrain.log").write_text(log)
        assert Run(tmp_path, {}, None).message == message
    (tmp_path / "sectrain.log").unlink()
    assert Run(tmp_path, {}, None).message == ""
