"""`sectrain-models`: the registry's parameters and FLOPs, as a table and as JSON."""

import json
import subprocess
import sys

import pytest

from sectrain.catalog import main


def test_json_lists_plain_and_se_counts_at_the_default_size(capsys):
    assert main(["cifar_resnet20", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == "cifar_resnet20" and row["input_size"] == 32
    assert row["plain"]["trainable"] == 269_722 and row["attention"]["trainable"] == 272_095
    assert row["attention"]["flops"] > row["plain"]["flops"] > 40e6


def test_table_has_a_row_per_matching_model(capsys):
    assert main(["cifar_resnet[25]*"]) == 0
    out = capsys.readouterr().out
    assert "cifar_resnet20" in out and "cifar_resnet56" in out and "cifar_resnet32" not in out
    assert "271,098" in out  # total parameters of the plain ResNet-20, BN statistics included


@pytest.mark.parametrize(
    "args, title",
    [
        ([], "plain and with se (ratio 16)"),
        (["--attention", "scse", "--ratio", "8"], "plain and with scse (ratio 8)"),
        (["--attention", "eca"], "plain and with eca"),
    ],
)
def test_the_title_names_the_ratio_of_blocks_that_take_one(capsys, args, title):
    assert main(["cifar_resnet20", *args]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.strip() == f"Registered models, {title}"


def test_a_config_name_lists_the_model_it_builds(capsys):
    assert main(["se_resnet2?", "--json"]) == 0  # conf/model/se_resnet20.yaml
    assert [row["model"] for row in json.loads(capsys.readouterr().out)] == ["cifar_resnet20"]


def test_several_patterns_list_each_model_once_in_their_order(capsys):
    assert main(["se_resnet20", "cifar_resnet5*", "cifar_resnet20", "--json"]) == 0
    names = [row["model"] for row in json.loads(capsys.readouterr().out)]
    assert names == ["cifar_resnet20", "cifar_resnet56"]


def test_unknown_pattern_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cifar_resnet20", "se_resnet5O"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no registered model or model config matches 'se_resnet5O'" in err
    assert "resnext50_32x4d" in err  # the registered names, to pick from


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attention", "cbam"], "invalid choice: 'cbam'"),
        (["--ratio", "0"], "must be at least 1. Received: 0"),
        (["--ratio", "x"], "invalid positive_int value: 'x'"),
        (["--attention", "eca", "--ratio", "4"], "--ratio: eca blocks take no reduction ratio"),
    ],
)
def test_bad_options_exit_2_with_a_message(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["cifar_resnet20", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("sectrain ")


@pytest.mark.parametrize("json_output", [True, False], ids=["json", "table"])
def test_a_reader_gone_ends_the_command_without_a_traceback(json_output):
    # sectrain-models ... | head: head has exited before the command writes
    command = "import sys; from sectrain.catalog import main; sys.exit(main())"
    args = ["cifar_resnet20", "--json"] if json_output else ["cifar_resnet20"]
    process = subprocess.Popen(
        [sys.executable, "-c", command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()
    stderr = process.communicate(timeout=300)[1].decode()
    assert process.returncode == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
