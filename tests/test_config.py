"""The config schema: every shipped option validates; mistakes name key, value, choices."""

import re

import pytest
import yaml
from omegaconf import OmegaConf

from sectrain.cli import check_command_line, check_overrides, config_groups
from sectrain.config import ATTENTION_KINDS, RATIO_KINDS, check_key, run_config_yaml, with_defaults
from sectrain.errors import ConfigError
from tests.helpers import compose_config, make_config


@pytest.mark.parametrize(
    "group_option",
    [
        f"{'+' if group == 'experiment' else ''}{group}={option}"  # experiments are added
        for group, options in config_groups().items()
        for option in options
    ],
)
def test_every_shipped_config_option_composes_and_validates(group_option):
    required = {"data=folder": ["data.path=/images"], "data=tfds": ["data.name=mnist"]}
    # 299: large enough for every model
    config = make_config(group_option, "data.image_size=299", *required.get(group_option, []))
    assert config.model.name and config.trainer.epochs >= 1


def test_defaults_train_se_resnet20_on_digits():
    config = make_config()
    assert config.model.name == "cifar_resnet20"
    assert config.model.attention.kind == "se" and config.model.attention.ratio == 16
    assert config.data.source == "digits" and config.data.image_size == 32


def test_attention_none_gives_the_plain_network():
    assert make_config("model=se_resnet50", "model/attention=none").model.attention.kind == "none"


def test_senet154_config_has_the_appendix_dropout():
    assert make_config("model=senet154", "data.image_size=224").model.dropout == 0.2


def test_any_key_can_be_overridden():
    config = make_config(
        "model.attention.ratio=8", "trainer.global_batch_size=32", "optimizer.lr=0.3"
    )
    assert (config.model.attention.ratio, config.trainer.global_batch_size) == (8, 32)
    assert config.optimizer.lr == 0.3


def test_attention_kinds_match_the_registered_layers():
    from sectrain.layers.attention import ATTENTION_LAYERS

    assert set(ATTENTION_KINDS) == {"none", *ATTENTION_LAYERS.names()}


def test_ratio_kinds_are_the_layers_that_take_a_ratio():
    from sectrain.layers.attention import ATTENTION_LAYERS, unused_settings

    takes_ratio = {
        k for k in ATTENTION_LAYERS.names() if not unused_settings({"kind": k, "ratio": 4}, {})
    }
    assert set(RATIO_KINDS) == takes_ratio


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.attention.ratio=0"], "model.attention.ratio: must be at least 1. Received: 0"),
        (["trainer.global_batch_size=-8"], "trainer.global_batch_size: must be at least 1"),
        (["model.name=resnet5"], "model.name: unknown value 'resnet5'"),
        (["model.attention.gate=sigmod"], "Did you mean 'sigmoid'?"),
        (["optimizer.name=sdg"], "Did you mean 'sgd'?"),
        (["schedule.milestones=[30,10]"], "schedule.milestones: must increase"),
        (["trainer.epochs=2", "schedule.warmup_epochs=2"], "schedule.warmup_epochs"),
        (["model.attention.stages=[1]"], "model.attention.stages: cifar_resnet20 has stages"),
        (["model=se_densenet121", "model.attention.placement=identity"], "supports standard"),
        (["model=se_inception_v3"], "data.image_size: inception_v3 needs inputs of at least 75"),
        (
            ["model=se_wrn16_8", "+model.options.widht=4"],
            "wrn has no option 'widht'. Its options: depth",
        ),
        (
            ["model=se_wrn16_8", "model.options.depth=abc"],
            "model.options.depth: takes an integer, like 16. Received: 'abc'",
        ),
        (
            ["+model.options.depths=3"],
            "model.options.depths: takes a list of integers, like [3, 3, 3]. Received: 3",
        ),
        (["model=se_mobilenet", "model.options.alpha=0"], "alpha: must be positive. Received: 0"),
        (["model=se_mobilenet", "model.options.alpha=0.01"], "alpha: must be at least 1/32"),
        (["+model.options.depths=[1,2.5,1]"], "depths: takes a list of integers, like [3, 3, 3]"),
        (["+model.options.block=bottlenek"], "Did you mean 'bottleneck'?"),
        (["+model.options.shortcut=pad3"], "model.options.shortcut: unknown value 'pad3'"),
        (["+model.options.depths=[2,2]"], "model.options.depths: give one depth per stage"),
        (
            [
                "+model.options.depths=[1,1]",
                "+model.options.planes=[8,16]",
                "model.attention.stages=[4]",
            ],
            "cifar_resnet20 with these model.options has stages [2, 3]. Received: 4",
        ),
        (["model=se_wrn16_8", "model.options.depth=12"], "must be 6n + 4 (10, 16, 22, 28, ...)"),
        (["model=se_densenet_bc", "model.options.depth=15"], "must be 6n + 4 with bottleneck"),
        (["model=se_densenet121", "+model.options.stem=deep"], "stem: unknown value 'deep'"),
        (["model=se_vgg16", "+model.options.depths=[2,2,3]"], "each of VGG's 5 blocks"),
        (["model=se_shufflenet", "model.options.groups=5"], "groups: one of 1, 2, 3, 4, 8"),
        (["model=se_vgg16", "model.attention.placement=post"], "vgg16 supports standard"),
        (["model=se_densenet121", "+model.options.compression=1.5"], "must be at most 1"),
        (
            ["model=se_densenet121", "+model.options.blocks=[1,1,1,1,1,1,1]"],
            "model.options.blocks: 7 dense blocks leave nothing of a 32x32 input",
        ),
        (["model.attention.kernel_size=4"], "model.attention.kernel_size: must be odd"),
        (["data=folder"], "data.path: data=folder needs the folder of images"),
        (["data=tfds"], "data.name: data=tfds needs a TensorFlow Datasets name"),
        (["trainer.micro_batches=3"], "must divide trainer.global_batch_size (64). Received: 3"),
        (["trainer.micro_batches=2", "trainer.sync_bn=true"], "use one of them"),
        (["trainer.ema_decay=1"], "trainer.ema_decay: must be in [0, 1). Received: 1.0"),
    ],
)
def test_invalid_values_are_rejected_with_key_value_and_allowed(overrides, expected):
    with pytest.raises(ConfigError) as error:
        make_config(*overrides)
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["model=se_resnet5O"], "model: unknown value 'se_resnet5O'"),
        (["data=cifar1O"], "Did you mean 'cifar10'?"),
        (["optimizer=adamw", "model/attention=ecca"], "Did you mean 'eca'?"),
        (["-m", "model=se_resnet20,se_resnet21"], "unknown value 'se_resnet21'"),
        (["trainer.epoch=3"], "trainer: unknown key 'epoch'. Allowed:"),
        (["trainer.epochs.x=3"], "trainer.epochs has no sub-keys"),
        (["+experiment=table22"], "experiment: unknown value 'table22'. Allowed:"),
        (["+extra=1"], "config: unknown key 'extra'"),
        (["trainer.epochs=many"], "trainer.epochs: Value 'many' of type 'str' could not be"),
        (["-m", "trainer.seed=1,x"], "trainer.seed"),
    ],
)
def test_command_line_mistakes_are_caught_before_hydra(args, expected):
    with pytest.raises(ConfigError) as error:
        check_overrides(args)
    assert expected in str(error.value)


def test_a_sweep_needs_a_multirun():
    for sweep in ("trainer.seed=0,1", "trainer.seed=range(3)", "model=se_resnet20,se_resnet50"):
        with pytest.raises(ConfigError, match=f"{re.escape(sweep)}: a sweep; add -m"):
            check_command_line([sweep])
        check_command_line(["--multirun", sweep])
    check_command_line(["schedule.milestones=[30,60]"])  # a list, not a sweep


def test_every_value_of_a_sweep_is_validated_before_any_job_runs():
    with pytest.raises(ConfigError, match="model.attention.ratio: must be at least 1"):
        check_command_line(["-m", "model.attention.ratio=4,0", "trainer.seed=0,1"])
    with pytest.raises(ConfigError, match="inception_v3 needs inputs of at least 75"):
        check_command_line(["-m", "model=se_resnet20,se_inception_v3"])


def test_a_composition_mistake_is_caught_before_hydra_makes_a_run_folder():
    args = ["model=se_densenet121", "model.attention.placement=identity"]
    for config_name in ("config", "bench"):  # sectrain, sectrain-bench
        with pytest.raises(ConfigError, match="densenet121 supports standard. Received: identi"):
            check_command_line(args, config_name)


def test_valid_command_lines_pass_the_check():
    check_command_line(["-m", "model=se_resnet20,se_resnet50", "model.attention.ratio=4,16"])
    check_command_line(["hydra.run.dir=/tmp/x", "+experiment=table2", "trainer.seed=3"])
    check_command_line(['+bench.variants.bf16=["trainer.precision=mixed_bfloat16"]'], "bench")
    check_command_line([])


def test_bench_settings_belong_to_sectrain_bench_alone():
    config = make_config()
    assert config.bench is None  # a training run neither prints nor saves them
    saved = yaml.safe_load(run_config_yaml(config))
    assert "bench" not in saved and saved["paper"] is None
    assert with_defaults(saved) == OmegaConf.to_container(OmegaConf.structured(config))
    bench = make_config("bench.rounds=2", config_name="bench").bench
    assert (bench.rounds, list(bench.variants)) == (2, ["plain", "configured"])
    for args in (["bench.rounds=2"], ["~bench.variants.plain"]):
        with pytest.raises(ConfigError, match=r"a setting of sectrain-bench; sectrain has no"):
            check_command_line(args)
    with pytest.raises(ConfigError, match="bench.rounds: must be at least 1. Received: 0"):
        check_command_line(["bench.rounds=0"], "bench")


def test_hydra_settings_on_the_command_line_are_checked_before_hydra_starts():
    with pytest.raises(ConfigError, match="n_jobs=abc: Value 'abc' of type 'str' could not be"):
        check_command_line(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=abc"])
    with pytest.raises(ConfigError, match="Could not override 'hydra.launcher.n_jobs'"):
        check_command_line(["hydra.launcher.n_jobs=3"])  # the default launcher has none
    with pytest.raises(ConfigError, match="n_jobs=2,3: Hydra's own settings cannot be swept"):
        check_command_line(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2,3"])
    check_command_line(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=3"])
    check_command_line(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3"])
    check_command_line(["hydra.run.dir=/tmp/run", "hydra.job_logging.root.level=WARNING"])


def put_srun_in(folder):
    """SLURM's srun (a stand-in), as on a cluster's login node."""
    srun = folder / "srun"
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)


@pytest.fixture
def slurm_commands(tmp_path, monkeypatch):
    put_srun_in(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_a_multi_worker_sweep_needs_a_process_per_job(slurm_commands):
    with pytest.raises(ConfigError, match="the jobs of a sweep need a process of their own"):
        check_command_line(["-m", "trainer.strategy=multi_worker", "trainer.seed=0,1"])
    check_command_line(["trainer.strategy=multi_worker"])
    check_command_line(["-m", "hydra/launcher=slurm", "trainer.strategy=multi_worker"])


def test_a_slurm_sweep_runs_only_where_there_is_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    args = ["-m", "hydra/launcher=slurm", "trainer.seed=0,1"]
    with pytest.raises(ConfigError, match="hydra/launcher=slurm: submits each job to SLURM, which"):
        check_command_line(args)
    check_command_line(args[1:2])  # one run ignores the launcher
    put_srun_in(tmp_path)
    check_command_line(args)


def test_check_key_walks_nested_sections():
    check_key("model.attention.ratio")
    check_key("model.options.depth")  # free-form: checked against the model's builder
    with pytest.raises(ConfigError, match="Did you mean 'ratio'"):
        check_key("model.attention.ration")


def test_composed_config_keeps_hydra_out_of_the_schema():
    assert "hydra" not in compose_config()
