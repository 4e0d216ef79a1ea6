"""`sectrain-models`: the registry's parameters and FLOPs, as a table and as JSON."""

import json

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


def test_unknown_pattern_is_an_error(capsys):
    assert main(["nothing*"]) == 2
    assert "no model matches" in capsys.readouterr().err
