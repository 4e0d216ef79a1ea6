"""sectrain-bench: variants timed side by side in one process, resources each in its own."""

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from sectrain.benchmark import cli
from sectrain.benchmark.cli import KERAS_FIT, median_over, ratios, variant_configs
from sectrain.benchmark.measure import timed_in_turns
from sectrain.errors import ConfigError
from tests.helpers import make_config


def bench_config(*overrides):
    """The config that `sectrain-bench OVERRIDES...` measures."""
    return make_config(*overrides, config_name="bench")


def test_variants_are_the_config_with_their_overrides_then_keras_fit():
    config = bench_config("model=se_resnet50", "model.attention.ratio=8")
    (plain, _, plain_config), (configured, _, se_config), (keras, runner, keras_config) = (
        variant_configs(config)
    )
    assert (plain, configured, keras, runner) == ("plain", "configured", KERAS_FIT, "keras_fit")
    assert plain_config.model.attention.kind == "none" and se_config.model.attention.ratio == 8
    assert keras_config is plain_config  # keras.applications is compared with the plain net
    # a model without a keras.applications counterpart has no such variant, nor one that
    # model.options make another network
    assert [name for name, *_ in variant_configs(bench_config())] == ["plain", "configured"]
    custom = bench_config("model=se_resnet50", "+model.options.depths=[2,2,2,2]")
    assert [name for name, *_ in variant_configs(custom)] == ["plain", "configured"]
    same = bench_config("model=se_resnet50", "+model.options.depths=[3,4,6,3]")  # the defaults
    assert [name for name, *_ in variant_configs(same)][-1] == KERAS_FIT
    # variants are removed and added by name
    config = bench_config(
        "~bench.variants.plain", '+bench.variants.xla=["trainer.jit_compile=true"]'
    )
    assert [(name, c.trainer.jit_compile) for name, _, c in variant_configs(config)] == [
        ("configured", None),
        ("xla", True),
    ]


def test_a_bad_variant_is_a_config_error_naming_it():
    config = bench_config('+bench.variants.tiny=["model.attention.ratio=0"]')
    with pytest.raises(ConfigError, match="bench.variants.tiny: model.attention.ratio: must be"):
        variant_configs(config)


def test_a_config_error_in_a_measuring_process_is_one_message(tmp_path):
    config = bench_config("trainer.strategy=mirrored", "trainer.jit_compile=true")
    config.trainer.sync_bn = True  # a combination validation refuses, written unchecked
    config_path = tmp_path / "mirrored_xla.yaml"
    config_path.write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    command = [sys.executable, "-m", "sectrain.benchmark.measure", "speed"]
    result = subprocess.run(
        [*command, str(tmp_path / "speed.json"), str(config_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "error: trainer.jit_compile" in result.stderr and "Traceback" not in result.stderr


def test_ratios_compare_each_variant_with_the_first():
    results = {
        "plain": {
            "train_synthetic": {"median": 100.0},
            "latency_ms": 10.0,
            "latency_unfolded_ms": 10.0,
            "peak_host_mib": 900,
        },
        "se": {
            "train_synthetic": {"median": 80.0},
            "latency_ms": 10.5,
            "latency_unfolded_ms": 11.0,
            "pipeline": {"median": 400.0},
            "peak_host_mib": 990,
        },
        KERAS_FIT: {"train_synthetic": {"median": 50.0}, "peak_host_mib": 1000},
        "broken": {"error": "..."},
    }
    rows = ratios(results)
    assert rows["se"] == pytest.approx(
        {
            "train_time_vs_first": 1.25,
            "latency_vs_first": 1.05,
            "latency_unfolded_vs_first": 1.1,
            "pipeline_vs_training": 5.0,
            "host_memory_vs_keras_fit": 0.99,
        }
    )
    assert rows[KERAS_FIT]["train_time_vs_first"] == 2.0 and "broken" not in rows


def test_bench_measures_se_plain_and_keras_fit_side_by_side(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sectrain.benchmark.cli",
            "model=se_mobilenet",  # has a keras.applications counterpart, builds fast
            "data=synthetic_cifar",
            "data.synthetic.images=4",  # fewer than a batch: the pipeline repeats them
            "trainer.global_batch_size=8",
            "bench.warmup_steps=1",
            "bench.timed_steps=2",
            "bench.inference_batch=4",
            "bench.inference_calls=2",
            "bench.pipeline_batches=2",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    plain, se, keras = (report["variants"][k] for k in ("plain", "configured", KERAS_FIT))
    for variant in (plain, se):
        for key in ("train_synthetic", "train_real", "pipeline", "inference"):
            stats = variant[key]
            assert 0 < stats["p25"] <= stats["median"] <= stats["p75"]
        assert variant["latency_ms"] > 0 and variant["latency_unfolded_ms"] > 0
        assert variant["peak_host_mib"] > 100
    assert se["parameters"] > plain["parameters"] == keras["parameters"]
    assert keras["train_synthetic"]["median"] > 0 and keras["peak_host_mib"] > 100
    rows = report["ratios"]
    assert rows["plain"]["train_time_vs_first"] == 1.0
    assert rows["configured"]["pipeline_vs_training"] == pytest.approx(
        se["pipeline"]["median"] / se["train_synthetic"]["median"]
    )
    assert "host_memory_vs_keras_fit" in rows["configured"]
    assert report["startup_seconds"]["help"] > 0
    assert "images/s: median" in result.stdout and "keras.applications + fit" in result.stdout


def test_rounds_combine_by_their_median_and_a_failure_stays_a_failure():
    rounds = [
        {"train": {"median": 5.0}, "parameters": 7, "devices": []},
        {"train": {"median": 9.0}, "parameters": 7, "devices": []},
        {"train": {"median": 6.0}, "parameters": 7, "devices": []},
    ]
    assert median_over(rounds) == {"train": {"median": 6.0}, "parameters": 7, "devices": []}
    assert median_over([rounds[0], {"error": "killed"}]) == {"error": "killed"}


def test_timed_calls_take_turns_reversing_every_other_turn():
    order = []
    calls = [(lambda name=name: order.append(name), count) for name, count in (("a", 3), ("b", 2))]
    seconds = timed_in_turns(calls)
    assert order == ["a", "b", "b", "a", "a"]
    assert [len(s) for s in seconds] == [3, 2] and all(t >= 0 for s in seconds for t in s)


def processes_of_a_round(monkeypatch, tmp_path, *overrides):
    """(kind, variant names) of each measuring process of one round, and its results."""
    config = bench_config(
        "model=se_resnet50",
        '+bench.variants.ratio8=["model.attention.ratio=8"]',
        '+bench.variants.bf16=["trainer.precision=mixed_bfloat16"]',
        *overrides,
    )
    processes = []

    def fake_measure(kind, named_configs, folder, console):
        processes.append((kind, [name for name, _ in named_configs]))
        return {name: {kind: True} for name, _ in named_configs}

    monkeypatch.setattr(cli, "measure", fake_measure)
    return processes, cli.measure_round(variant_configs(config), tmp_path, console=None)


def test_variants_sharing_session_settings_are_timed_in_one_process(monkeypatch, tmp_path):
    processes, results = processes_of_a_round(monkeypatch, tmp_path)
    assert processes == [
        ("speed", ["plain", "configured", "ratio8"]),
        ("speed", ["bf16"]),
        ("resources", ["plain"]),
        ("resources", ["configured"]),
        ("resources", ["ratio8"]),
        ("resources", ["bf16"]),
        ("keras_fit", [KERAS_FIT]),
    ]
    assert results["ratio8"] == {"speed": True, "resources": True}
    assert results[KERAS_FIT] == {"keras_fit": True}


def test_without_resources_a_round_measures_speed_only(monkeypatch, tmp_path):
    processes, results = processes_of_a_round(
        monkeypatch, tmp_path, "bench.resources=false", "bench.keras_fit=false"
    )
    assert processes == [("speed", ["plain", "configured", "ratio8"]), ("speed", ["bf16"])]
    assert results["ratio8"] == {"speed": True} and results["bf16"] == {"speed": True}
