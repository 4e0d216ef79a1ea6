"""`sectrain-bench`: training and inference throughput of a config and its variants,
measured side by side in one run.

    sectrain-bench model=se_resnet50 data=synthetic_imagenet trainer.global_batch_size=32

Takes every setting `sectrain` takes, plus bench.* (see `sectrain-bench --help`). For each
variant (by default: the configured model with attention off, then as configured, then
its keras.applications counterpart trained by model.fit) it measures training images/s
on a synthetic batch kept on the device and on the real input pipeline, the input
pipeline alone, inference latency at batch 1 (with SE folded into the convolution before
it, as sectrain's inference runs on a CPU, and as built, as it runs with a GPU) and
throughput at a large batch, and peak memory. The variants' training and inference calls
are timed in turns in one process (variants that change a setting of SESSION_SETTINGS get
a process per setting); the memory and the input pipeline of each variant are measured
in a process of its own.
Prints a table and writes bench.json to the run folder.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from rich.table import Table

from sectrain.cli import CONFIG_DIR, entry_point, fail, run_checked
from sectrain.config import check_value, validate
from sectrain.errors import ConfigError
from sectrain.loggers.console import wide_console
from sectrain.models import MODELS

# sectrain model name -> its keras.applications counterpart (the same network)
KERAS_APPLICATIONS = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "inception_v3": "InceptionV3",
    "inception_resnet_v2": "InceptionResNetV2",
    "mobilenet": "MobileNet",
    "mobilenet_v2": "MobileNetV2",
    "densenet121": "DenseNet121",
    "densenet169": "DenseNet169",
    "densenet201": "DenseNet201",
}
KERAS_FIT = "keras.applications + fit"


def variant_configs(config):
    """(name, runner, Config) of each variant: the config with each variant's overrides,
    then, if asked and there is one, the first variant as keras.applications + fit."""
    variants = []
    for name, overrides in config.bench.variants.items():
        node = OmegaConf.structured(config)
        try:
            for line in overrides:
                (override,) = OverridesParser.create().parse_overrides([line])
                check_value(override.key_or_group, override.value())
                OmegaConf.update(node, override.key_or_group, override.value(), merge=True)
            variants.append((name, "sectrain", validate(node)))
        except Exception as error:  # a bad override: name the variant
            raise ConfigError(f"bench.variants.{name}: {error}") from None
    first = variants[0][2]
    if (
        config.bench.keras_fit
        and first.model.name in KERAS_APPLICATIONS
        and not MODELS.get(first.model.name).changed(first.model.options)
    ):
        variants.append((KERAS_FIT, "keras_fit", first))
    return variants


# trainer settings that `start_session` makes for a whole process
SESSION_SETTINGS = ("strategy", "precision", "deterministic", "seed")


def measure(kind, named_configs, folder, console):
    """Runs measurement `kind` (see sectrain.benchmark.measure) of the (name, config)
    pairs in a fresh process; returns {name: results}, an error for each if it failed."""
    config_paths = []
    for name, config in named_configs:
        config_paths.append(folder / f"{name}.yaml".replace(" ", "_"))
        config_paths[-1].write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    names = [name for name, _ in named_configs]
    result_path = folder / f"{kind}_{config_paths[0].stem}.json"
    command = [sys.executable, "-m", "sectrain.benchmark.measure", kind, str(result_path)]
    with console.status(f"measuring {kind}: {', '.join(names)} ..."):
        process = subprocess.run(
            [*command, *map(str, config_paths)], capture_output=True, text=True
        )
    if process.returncode != 0:
        tail = "\n".join(process.stderr.strip().splitlines()[-5:])
        console.print(
            f"[bold red]{kind} of {', '.join(names)} failed[/] (exit {process.returncode}):\n{tail}"
        )
        return {name: {"error": tail, "exit_code": process.returncode} for name in names}
    return dict(zip(names, json.loads(result_path.read_text())))


def measure_round(variants, folder, console):
    """Every variant's results: the speed of sectrain's variants side by side in one
    process per group of SESSION_SETTINGS, and each variant's resources (if
    bench.resources) or keras fit in a process of its own."""
    groups = {}
    for name, runner, config in variants:
        if runner == "sectrain":
            key = tuple(getattr(config.trainer, k) for k in SESSION_SETTINGS)
            groups.setdefault(key, []).append((name, config))
    speed = {}
    for group in groups.values():
        speed.update(measure("speed", group, folder, console))
    results = {}
    for name, runner, config in variants:
        if runner == "keras_fit":
            results.update(measure("keras_fit", [(name, config)], folder, console))
            continue
        if not config.bench.resources:
            results[name] = speed[name]
            continue
        resources = measure("resources", [(name, config)], folder, console)[name]
        failed = [r for r in (speed[name], resources) if "error" in r]
        results[name] = failed[0] if failed else {**speed[name], **resources}
    return results


def median_over(values):
    """The element-wise median of results of the same structure (one per round);
    a failure in any round is the result."""
    failed = [v for v in values if isinstance(v, dict) and "error" in v]
    if failed:
        return failed[0]
    first = values[0]
    if all(v == first for v in values):
        return first
    if isinstance(first, dict):
        return {
            k: median_over([v[k] for v in values]) for k in first if all(k in v for v in values)
        }
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(values)
    return first


def startup_seconds():
    """Wall seconds of `sectrain --help` and of a configuration error."""
    seconds = {}
    for key, args in (("help", ["--help"]), ("config_error", ["model=no_such_model"])):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sectrain", *args], capture_output=True)
        seconds[key] = time.perf_counter() - started
    return seconds


def machine():
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "platform": platform.platform()}


def ratios(results):
    """The side-by-side figures: each variant against the first (step time, latency),
    the input pipeline against training, host memory against keras.applications + fit."""
    names = [n for n, r in results.items() if "error" not in r]
    if not names:
        return {}
    first = results[names[0]]
    keras_fit = results.get(KERAS_FIT, {})
    table = {}
    for name in names:
        r = results[name]
        row = {
            "train_time_vs_first": first["train_synthetic"]["median"]
            / r["train_synthetic"]["median"],
        }
        for latency in ("latency", "latency_unfolded"):
            if f"{latency}_ms" in r and f"{latency}_ms" in first:
                row[f"{latency}_vs_first"] = r[f"{latency}_ms"] / first[f"{latency}_ms"]
        if "pipeline" in r:
            row["pipeline_vs_training"] = r["pipeline"]["median"] / r["train_synthetic"]["median"]
        if "peak_host_mib" in keras_fit:
            row["host_memory_vs_keras_fit"] = r["peak_host_mib"] / keras_fit["peak_host_mib"]
        table[name] = row
    return table


def show(results, rows, rounds, console):
    """One column per variant, one row per measurement."""

    def number(value):
        return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"

    def rate(stats):
        return f"{number(stats['median'])} ({number(stats['p25'])}-{number(stats['p75'])})"

    measurements = (  # label, where in a variant's results and ratios, format
        ("train images/s, synthetic", "train_synthetic", rate),
        ("  step time vs first", "train_time_vs_first", "{:.3f}x".format),
        ("train images/s, real data", "train_real", rate),
        ("input pipeline images/s", "pipeline", rate),
        ("  pipeline / training", "pipeline_vs_training", "{:.1f}x".format),
        ("latency at batch 1, ms", "latency_ms", "{:.1f}".format),
        ("  latency vs first", "latency_vs_first", "{:.3f}x".format),
        ("latency, SE not folded, ms", "latency_unfolded_ms", "{:.1f}".format),
        ("  latency vs first", "latency_unfolded_vs_first", "{:.3f}x".format),
        ("inference images/s", "inference", rate),
        ("peak host memory, MiB", "peak_host_mib", "{:,.0f}".format),
        ("  vs keras.applications + fit", "host_memory_vs_keras_fit", "{:.3f}x".format),
        ("peak GPU memory, MiB", "peak_gpu_mib", "{:,.0f}".format),
        ("trainable parameters", "parameters", "{:,}".format),
    )
    table = Table(
        title="images/s: median (25th-75th percentile) over the timed calls"
        + (f"; each the median over {rounds} rounds" if rounds > 1 else "")
    )
    table.add_column("")
    for name in results:
        table.add_column(name, justify="right")
    for label, key, show_value in measurements:
        cells = []
        for name, result in results.items():
            value = {**result, **rows.get(name, {})}.get(key)
            cells.append(
                "[red]failed[/]"
                if "error" in result
                else ""
                if value is None
                else show_value(value)
            )
        if any(cells):
            table.add_row(label, *cells)
    console.print(table)


@hydra.main(config_path=str(CONFIG_DIR), config_name="bench", version_base="1.3")
def run(cfg):
    console = wide_console()
    try:
        config = validate(cfg)
        variants = variant_configs(config)
    except ConfigError as error:
        fail(error)
    folder = Path(HydraConfig.get().runtime.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    t = config.trainer
    console.print(
        f"[bold]sectrain-bench[/] {config.model.name} on {config.data.name} "
        f"{config.data.image_size}x{config.data.image_size}, global batch "
        f"{t.global_batch_size}, {t.precision}, {t.steps_per_call} step(s) per call; "
        f"variants: {', '.join(name for name, *_ in variants)}",
        highlight=False,
    )
    rounds = []
    for number in range(config.bench.rounds):
        round_folder = folder / f"round_{number}" if config.bench.rounds > 1 else folder
        round_folder.mkdir(exist_ok=True)
        rounds.append(measure_round(variants, round_folder, console))
    results = {name: median_over([r[name] for r in rounds]) for name in rounds[0]}
    # each round's variants ran back to back: take the ratios within rounds, then the median
    rows = median_over([ratios(r) for r in rounds])
    show(results, rows, config.bench.rounds, console)
    startup = startup_seconds()
    console.print(
        f"start-up: sectrain --help {startup['help']:.2f} s, a config error "
        f"{startup['config_error']:.2f} s",
        highlight=False,
    )
    report = {
        "machine": machine(),
        "config": OmegaConf.to_container(OmegaConf.structured(config)),
        "variants": results,
        "ratios": rows,
        "rounds": rounds if len(rounds) > 1 else None,
        "startup_seconds": startup,
    }
    (folder / "bench.json").write_text(json.dumps(report, indent=2))
    console.print(f"Written: {folder / 'bench.json'}", highlight=False)
    if any("error" in r for r in results.values()):
        sys.exit(1)


@entry_point
def main():
    run_checked(run, "bench")


if __name__ == "__main__":
    main()
