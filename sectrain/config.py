"""The configuration schema and its validation.

Hydra composes YAML files from conf/; `validate` turns the result into the dataclasses
below, checking types, names, ranges and cross-field rules. It runs before TensorFlow is
imported, so a mistake costs well under two seconds.
"""

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sectrain.errors import ConfigError, unknown_choice

ATTENTION_KINDS = ("none", "se", "sse", "scse", "eca")  # = the registered layers (tested)
RATIO_KINDS = ("se", "scse")  # = the layers that take model.attention.ratio (tested)
SQUEEZES = ("avg", "max", "none")
GATES = ("sigmoid", "hard_sigmoid", "tanh", "relu")
PLACEMENTS = ("standard", "pre", "post", "identity", "3x3")
DATA_SOURCES = ("digits", "tfds", "folder", "synthetic")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
BAD_IMAGES = ("skip", "fail")


@dataclass
class AttentionConfig:
    kind: str = "se"  # attention block: none | se | sse | scse | eca
    ratio: int = 16  # reduction ratio r of the first FC layer
    min_channels: int = 1  # lower bound on the reduced width
    squeeze: str = "avg"  # avg | max | none (NoSqueeze, Table 16)
    gate: str = "sigmoid"  # sigmoid | hard_sigmoid | tanh | relu
    use_bias: bool = True  # biases in the FC layers
    placement: str = "standard"  # standard | pre | post | identity (Fig. 5) | 3x3 (Table 15)
    stages: list[int] | None = None  # stages with attention (2-5); null: all
    kernel_size: int | None = None  # eca: 1-D kernel across channels; null: adaptive


@dataclass
class ModelConfig:
    name: str = MISSING  # a registered architecture, see `sectrain.models.MODELS`
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    dropout: float = 0.0  # dropout rate before the classifier
    options: dict[str, Any] = field(default_factory=dict)  # the builder's own arguments
    # a run folder or .keras file whose weights start training, layer by layer where
    # names and shapes match (fine-tuning; a new classifier for other classes)
    init_from: str | None = None


@dataclass
class AugmentConfig:
    pad_crop: int = 0  # zero-pad by this many pixels, then random crop back; 0: off
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of a square set to the mean colour at a random place; 0: off
    # random-size crop (ImageNet recipe): the crop's area as a fraction of the image,
    # e.g. [0.08, 1.0]; null: off (the whole image is resized)
    scale: list[float] | None = None
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])  # of those crops


@dataclass
class SyntheticConfig:
    images: int = 1024  # distinct random images (they repeat)
    shape: list[int] = field(default_factory=lambda: [375, 500, 3])  # stored size
    classes: int = 1000


@dataclass
class DataConfig:
    source: str = "digits"  # digits (embedded) | tfds (TensorFlow Datasets) | folder | synthetic
    name: str | None = "digits"  # the TFDS name when source=tfds
    path: str | None = None  # folder: one sub-folder per class (or train/ and val/)
    image_size: int = 32  # images are resized to image_size x image_size
    train_split: str = "train"
    val_split: str = "test"
    val_fraction: float = 0.2  # digits only: stratified validation fraction
    data_dir: str | None = None  # TFDS data directory (null: TFDS default)
    manual_dir: str | None = None  # TFDS: where manually downloaded archives are
    mean: list[float] | None = None  # per-channel mean in [0, 1]; null: measured
    std: list[float] | None = None  # per-channel std in [0, 1]; null: measured
    cache: bool = True  # cache decoded images in memory (small data sets)
    bad_images: str = "skip"  # folder: skip (with a warning and a count) | fail
    shuffle_buffer: int = 10_000
    # evaluation sees the central square of eval_crop x the short side, resized to
    # image_size (0.875: 256 -> 224, the paper's); 1: the whole image, resized
    eval_crop: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # source=synthetic


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    beta_1: float = 0.9  # adam, adamw
    beta_2: float = 0.999  # adam, adamw
    epsilon: float = 1e-7  # adam, adamw
    # sgd, adam: L2 penalty 0.5 * wd * |w|^2 on conv and dense kernels, added to the loss
    # (the paper's weight decay); adamw: decoupled decay of the same kernels.
    weight_decay: float = 1e-4
    scale_lr_with_batch: bool = False  # lr * global_batch_size / base_batch_size
    base_batch_size: int = 256


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # constant | step | multistep | cosine
    warmup_epochs: float = 0.0  # linear warmup from 0 to the peak learning rate
    step_size: int = 30  # step: epochs between decays
    milestones: list[int] = field(default_factory=list)  # multistep: decay epochs
    gamma: float = 0.1  # step, multistep: decay factor
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of the peak


@dataclass
class TrainerConfig:
    epochs: int = 10
    global_batch_size: int = 128  # summed over all replicas
    seed: int = 0
    strategy: str = "auto"  # auto | default | one_device | mirrored | multi_worker | tpu
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16
    sync_bn: bool = False  # synchronise batch-norm statistics across replicas
    steps_per_call: int = 1  # training steps per tf.function call
    micro_batches: int = 1  # passes per replica and step, their gradients summed
    jit_compile: bool | None = None  # XLA; null: on with a GPU (unless mirrored with sync_bn)
    save_model: bool = True  # write model.keras at the end
    checkpoint_every_epochs: int = 1  # checkpoint at the end of every N-th epoch (and the last)
    checkpoint_every_steps: int = 0  # also checkpoint every N steps; 0: at epoch ends only
    label_smoothing: float = 0.0  # training targets: 1 - eps on the label, eps spread evenly
    ema_decay: float = 0.0  # moving average of the weights, evaluated and saved; 0: none
    deterministic: bool = False  # TensorFlow op determinism: same seed, same bits
    fresh_start: bool = False  # the run dir holds another run: set it aside, start anew


@dataclass
class LoggerConfig:
    print_config: bool = True  # print the resolved config at the start
    progress: bool = True  # progress bar per epoch
    tensorboard: bool = True  # TensorBoard event files in the run dir


@dataclass
class BenchConfig:
    """What `sectrain-bench` measures (conf/bench.yaml)."""

    # variant name -> key=value overrides of the config; ratios compare with the first
    # (conf/bench.yaml sets plain and configured, which ~bench.variants.NAME removes)
    variants: dict[str, list[str]] = field(default_factory=dict)
    keras_fit: bool = True  # also the keras.applications counterpart trained by model.fit
    rounds: int = 1  # measure all variants this many times; report medians over rounds
    warmup_steps: int = 3  # untimed training steps first (tracing, compilation)
    timed_steps: int = 20  # timed training steps, in calls of trainer.steps_per_call
    # also each variant's peak memory, training on the input pipeline and the pipeline
    # alone, in a process of its own (false: speed only, one process per group of variants)
    resources: bool = True
    real_data: bool = True  # resources: also train on the configured input pipeline
    inference_batch: int = 64  # throughput batch (latency is measured at batch 1)
    inference_calls: int = 10
    pipeline_batches: int = 20  # resources: batches of the input pipeline timed alone


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # the published results these runs reproduce (imagenet | cifar | ablation; set by
    # conf/experiment): sectrain-report puts the paper's numbers beside them
    paper: str | None = None
    bench: BenchConfig | None = None  # set by conf/bench.yaml: sectrain-bench alone has one


# The base of conf/config.yaml: every key exists, with its type, before any YAML is merged.
SCHEMA_NAME = "sectrain_schema"
ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


def with_defaults(run_config):
    """A run's config (config.yaml, as a dict) with the keys it lacks at their defaults:
    keys added to sectrain after the run, whose defaults keep the behaviour it had."""
    defaults = OmegaConf.to_container(OmegaConf.structured(Config))
    return OmegaConf.to_container(OmegaConf.merge(defaults, run_config))


def run_config_yaml(config: Config) -> str:
    """A run's config as YAML, as a run prints it and saves it in config.yaml: without the
    `bench` section where it is unset (sectrain-bench alone sets it). `with_defaults`
    reads it back whole."""
    tree = OmegaConf.to_container(OmegaConf.structured(config))
    if tree["bench"] is None:
        del tree["bench"]
    return OmegaConf.to_yaml(tree)


def check_xla(jit_compile, sync_bn, mirrored):
    """Raises ConfigError for XLA with batch norm synchronised across the replicas of a
    mirrored strategy: its all-reduce is a `merge_call`, which XLA cannot compile. Checked
    here for `mirrored` and `multi_worker`, and again once `auto` has picked a strategy."""
    if jit_compile and sync_bn and mirrored:
        raise ConfigError(
            "trainer.jit_compile: XLA cannot compile batch norm synchronised across the "
            "replicas of a mirrored strategy (trainer.sync_bn=true); use "
            "trainer.jit_compile=false or trainer.sync_bn=false"
        )


def validate(cfg: Any) -> Config:
    """Checks a composed config and returns it as a `Config`.

    Raises:
        ConfigError: naming the key, the value received and what is allowed.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise _schema_error(error) from None
    _check(config)
    return config


def check_key(key):
    """Raises ConfigError if the dotted `key` is not in the schema."""
    node = Config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            parent = ".".join(parts[:depth]) or "config"
            raise unknown_choice(parent, part, fields, what="key")
        node = fields[part].type
        node = next((t for t in typing.get_args(node) if dataclasses.is_dataclass(t)), node)
        if getattr(node, "__origin__", None) is dict:
            return  # free-form (model.options): the model checks its own keys
        if not dataclasses.is_dataclass(node):
            if depth < len(parts) - 1:
                raise ConfigError(f"{'.'.join(parts[: depth + 1])} has no sub-keys")
            return


def check_value(key, value):
    """Raises ConfigError if `value` cannot be stored at the schema's `key` (wrong type)."""
    check_key(key)
    schema = OmegaConf.structured(Config(bench=BenchConfig()))  # sectrain-bench's keys too
    try:
        OmegaConf.update(schema, key, value, merge=True)
    except OmegaConfBaseException as error:
        raise _schema_error(error) from None


def _schema_error(error):
    """Rewords an OmegaConf error (unknown key, wrong type) as a ConfigError."""
    key = getattr(error, "full_key", "") or ""
    if key:
        try:
            check_key(re.sub(r"\[\d+\]", "", key))  # an item's key is its list's
        except ConfigError as unknown_key:
            return unknown_key
    return ConfigError(f"{key or 'config'}: {str(error).splitlines()[0]}")


def _choice(key, value, choices):
    if value not in choices:
        raise unknown_choice(key, value, choices)


def _at_least(key, value, minimum):
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}. Received: {value}")


def _between(key, value, low, high):
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}. Received: {value}")


def _check(c: Config):
    from sectrain.models import MODELS, check_model  # registers names only; no TensorFlow

    if c.paper is not None:
        from sectrain.reporting.published import PAPER_SETS  # plain data; no TensorFlow

        _choice("paper", c.paper, PAPER_SETS)
    _choice("model.name", c.model.name, MODELS.names())
    a = c.model.attention
    _choice("model.attention.kind", a.kind, ATTENTION_KINDS)
    _at_least("model.attention.ratio", a.ratio, 1)
    _at_least("model.attention.min_channels", a.min_channels, 1)
    _choice("model.attention.squeeze", a.squeeze, SQUEEZES)
    _choice("model.attention.gate", a.gate, GATES)
    _choice("model.attention.placement", a.placement, PLACEMENTS)
    if a.kernel_size is not None and (a.kernel_size < 1 or a.kernel_size % 2 == 0):
        raise ConfigError(f"model.attention.kernel_size: must be odd. Received: {a.kernel_size}")
    _between("model.dropout", c.model.dropout, 0.0, 0.99)

    d = c.data
    _choice("data.source", d.source, DATA_SOURCES)
    if d.source == "folder" and not d.path:
        raise ConfigError("data.path: data=folder needs the folder of images, data.path=/my/images")
    if d.source == "tfds" and not d.name:
        raise ConfigError("data.name: data=tfds needs a TensorFlow Datasets name, data.name=NAME")
    _at_least("data.image_size", d.image_size, 8)
    _between("data.val_fraction", d.val_fraction, 0.01, 0.9)
    _at_least("data.augment.pad_crop", d.augment.pad_crop, 0)
    _between("data.augment.cutout", d.augment.cutout, 0, d.image_size)
    _at_least("data.shuffle_buffer", d.shuffle_buffer, 1)
    _choice("data.bad_images", d.bad_images, BAD_IMAGES)
    _between("data.eval_crop", d.eval_crop, 0.1, 1.0)
    for key, pair, low, high in (
        ("data.augment.scale", d.augment.scale, 0.01, 1.0),
        ("data.augment.aspect_ratio", d.augment.aspect_ratio, 0.1, 10.0),
    ):
        if pair is not None and (len(pair) != 2 or not low <= pair[0] <= pair[1] <= high):
            raise ConfigError(
                f"{key}: give [low, high] with {low} <= low <= high <= {high}. Received: {pair}"
            )
    _at_least("data.synthetic.images", d.synthetic.images, 1)
    _at_least("data.synthetic.classes", d.synthetic.classes, 2)
    if len(d.synthetic.shape) != 3 or min(d.synthetic.shape) < 1:
        raise ConfigError(
            f"data.synthetic.shape: give [height, width, channels]. Received: {d.synthetic.shape}"
        )
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        if values is not None and not values:
            raise ConfigError(f"{key}: give one value per channel, or null to measure it")
    if d.std is not None and min(d.std) <= 0:
        raise ConfigError(f"data.std: every value must be positive. Received: {d.std}")
    check_model(c.model.name, a, c.model.options, d.image_size)

    o = c.optimizer
    _choice("optimizer.name", o.name, OPTIMIZERS)
    if not 0 < o.lr <= 100:
        raise ConfigError(f"optimizer.lr: must be in (0, 100]. Received: {o.lr}")
    _between("optimizer.momentum", o.momentum, 0.0, 0.999)
    _at_least("optimizer.weight_decay", o.weight_decay, 0.0)
    _at_least("optimizer.base_batch_size", o.base_batch_size, 1)

    s = c.schedule
    _choice("schedule.name", s.name, SCHEDULES)
    _at_least("schedule.warmup_epochs", s.warmup_epochs, 0.0)
    _at_least("schedule.step_size", s.step_size, 1)
    _between("schedule.gamma", s.gamma, 0.0, 1.0)
    _between("schedule.min_lr_ratio", s.min_lr_ratio, 0.0, 1.0)
    if list(s.milestones) != sorted(set(s.milestones)):
        raise ConfigError(f"schedule.milestones: must increase. Received: {list(s.milestones)}")

    b = c.bench
    if b is not None:
        if not b.variants:
            raise ConfigError("bench.variants: give at least one, e.g. {configured: []}")
        for key in ("rounds", "warmup_steps", "timed_steps", "inference_batch", "inference_calls"):
            _at_least(f"bench.{key}", getattr(b, key), 1)
        _at_least("bench.pipeline_batches", b.pipeline_batches, 0)

    t = c.trainer
    _at_least("trainer.epochs", t.epochs, 1)
    _at_least("trainer.global_batch_size", t.global_batch_size, 1)
    _at_least("trainer.steps_per_call", t.steps_per_call, 1)
    _at_least("trainer.micro_batches", t.micro_batches, 1)
    if t.global_batch_size % t.micro_batches:
        raise ConfigError(
            f"trainer.micro_batches: must divide trainer.global_batch_size "
            f"({t.global_batch_size}). Received: {t.micro_batches}"
        )
    if t.micro_batches > 1 and t.sync_bn:
        raise ConfigError(
            "trainer.micro_batches: batch norm normalises each micro-batch by its own "
            "statistics, which trainer.sync_bn=true would share across the whole batch; "
            "use one of them"
        )
    _at_least("trainer.checkpoint_every_steps", t.checkpoint_every_steps, 0)
    _at_least("trainer.checkpoint_every_epochs", t.checkpoint_every_epochs, 1)
    _between("trainer.label_smoothing", t.label_smoothing, 0.0, 0.99)
    if not 0 <= t.ema_decay < 1:
        raise ConfigError(f"trainer.ema_decay: must be in [0, 1). Received: {t.ema_decay}")
    _choice("trainer.strategy", t.strategy, STRATEGIES)
    _choice("trainer.precision", t.precision, PRECISIONS)
    check_xla(t.jit_compile, t.sync_bn, mirrored=t.strategy in ("mirrored", "multi_worker"))
    if s.warmup_epochs >= t.epochs:
        raise ConfigError(
            f"schedule.warmup_epochs: must be less than trainer.epochs ({t.epochs}). "
            f"Received: {s.warmup_epochs}"
        )
