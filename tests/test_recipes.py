"""The paper's recipes (conf/experiment), their data pipelines and label smoothing."""

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sectrain.cli import CONFIG_DIR
from sectrain.config import validate
from sectrain.data.augment import cutout, random_size_crop
from sectrain.data.images import centre_crop, eval_image
from sectrain.data.pipeline import (
    make_pipelines,
    train_pipeline,
    training_order,
    val_pipeline,
    val_steps,
)
from sectrain.data.sources import Source, load_source
from sectrain.reporting.published import lookup
from sectrain.training.loop import TrainingLoop
from tests.helpers import compose_config, make_config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def sweep_jobs(experiment):
    """The overrides of each job `sectrain -m +experiment=NAME` runs (the sweeper's
    cartesian product), parsed as Hydra parses them."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", [f"+experiment={experiment}"], return_hydra_config=True)
    jobs = [[]]
    for key, values in (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).items():
        (override,) = OverridesParser.create().parse_overrides([f"{key}={values}"])
        jobs = [job + [f"{key}={v}"] for job in jobs for v in override.sweep_string_iterator()]
    return jobs


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_every_experiment_is_a_valid_config(experiment):
    for job in sweep_jobs(experiment):
        validate(compose_config(f"+experiment={experiment}", *job))


EXPECTED_TABLE_ROWS = {  # experiment -> (jobs, paper tables its jobs compare with)
    "table2": (10, {"Table 2"}),
    "table2_inception_resnet_v2": (2, {"Table 2"}),
    "table2_vgg16_bn_inception": (4, {"Table 2"}),
    "table3": (4, {"Table 3"}),
    "table4_5_resnet": (8, {"Table 4", "Table 5"}),
    "table4_5_wrn": (4, {"Table 4", "Table 5"}),
    "table4_shake_shake": (2, {"Table 4"}),
    "table5_shake_even": (2, {"Table 5"}),
    "table8_senet154": (1, {"Table 8"}),
    "ablation_ratio": (5, {"Table 10", "Tables 10-16"}),
    "ablation_squeeze": (3, {"Table 11", "Table 16", "Tables 10-16"}),
    "ablation_gate": (3, {"Table 12", "Tables 10-16"}),
    "ablation_stages": (4, {"Table 13", "Tables 10-16"}),
    "ablation_placement": (5, {"Table 14", "Table 15", "Tables 10-16"}),
}


@pytest.mark.parametrize("experiment", sorted(EXPECTED_TABLE_ROWS))
def test_each_paper_experiment_job_meets_its_own_published_row(experiment):
    jobs = sweep_jobs(experiment)
    expected_jobs, expected_tables = EXPECTED_TABLE_ROWS[experiment]
    assert len(jobs) == expected_jobs
    rows = []
    for job in jobs:
        config = OmegaConf.to_container(
            OmegaConf.structured(validate(compose_config(f"+experiment={experiment}", *job)))
        )
        rows.append(lookup(config["paper"], config))
    assert None not in rows
    assert len(set(rows)) == len(jobs)  # each job its own row
    assert {row.table for row in rows} == expected_tables


def test_the_ablation_ratio_rows_are_the_papers():
    config = OmegaConf.to_container(
        OmegaConf.structured(make_config("+experiment=ablation_ratio", "model.attention.ratio=8"))
    )
    row = lookup("ablation", config)
    assert (row.top1_error, row.top5_error) == (22.26, 5.99)
    config["model"]["attention"]["use_bias"] = True  # ratio etc. identify it, not the bias
    config["model"]["attention"]["ratio"] = 3  # no such row
    assert lookup("ablation", config) is None


def test_a_network_changed_by_model_options_meets_no_published_row():
    config = OmegaConf.to_container(OmegaConf.structured(make_config("+experiment=table2")))
    assert lookup("imagenet", config).top1_error == 23.29  # SE-ResNet-50
    config["model"]["options"] = {"depths": [3, 4, 6, 3]}  # ResNet-50's own: the same network
    assert lookup("imagenet", config).top1_error == 23.29
    config["model"]["options"] = {"depths": [2, 2, 2, 2]}
    assert lookup("imagenet", config) is None
    table3 = make_config("+experiment=table3", "model=se_mobilenet")
    mobilenet = OmegaConf.to_container(OmegaConf.structured(table3))
    mobilenet["model"]["options"] = {}  # alpha left at its default, 1.0: the paper's
    assert lookup("imagenet", mobilenet).top1_error == 25.3
    vgg = make_config(
        "+experiment=table2_vgg16_bn_inception", "model=se_vgg16", "model.options.batch_norm=false"
    )
    assert lookup("imagenet", OmegaConf.to_container(OmegaConf.structured(vgg))) is None


def test_the_shake_shake_rows_need_cutout_and_the_published_shake():
    def config(*overrides):
        made = make_config("+experiment=table4_shake_shake", *overrides)
        return OmegaConf.to_container(OmegaConf.structured(made))

    assert lookup("cifar", config()).top1_error == 2.12
    assert lookup("cifar", config("model/attention=none")).top1_error == 2.56
    assert lookup("cifar", config("data.augment.cutout=0")) is None
    assert lookup("cifar", config("model.options.backward=even")) is None


def test_imagenet_recipe_matches_the_paper(tmp_path):
    config = make_config("+experiment=imagenet_recipe")
    assert config.model.name == "resnet50" and config.data.name == "imagenet2012"
    assert (config.trainer.global_batch_size, config.optimizer.lr) == (1024, 0.6)
    assert config.optimizer.scale_lr_with_batch and config.optimizer.base_batch_size == 1024
    assert (config.schedule.name, config.schedule.step_size, config.schedule.gamma) == (
        "step",
        30,
        0.1,
    )
    assert config.trainer.epochs == 100 and config.data.eval_crop == 0.875
    assert config.data.augment.scale == [0.08, 1.0] and config.data.augment.flip
    ablation = make_config("+experiment=ablation_gate")
    assert ablation.trainer.label_smoothing == 0.1 and not ablation.model.attention.use_bias


@pytest.mark.parametrize(
    "experiment, size, channels",
    [
        ("imagenet_recipe", 224, 3),
        ("table2_inception_resnet_v2", 299, 3),
        ("cifar_recipe", 32, 3),
        ("table4_shake_shake", 32, 3),  # with Cutout
    ],
)
def test_recipe_pipelines_build_on_mock_data(experiment, size, channels):
    config = make_config(f"+experiment={experiment}")
    with tfds.testing.mock_data(num_examples=8):
        source = load_source(config.data)
        train, val, (mean, std) = make_pipelines(source, config.data, 4, seed=0)
        images, labels = next(iter(train))
        val_images, _, _ = next(iter(val))
    assert source.encoded == (size > 32)  # ImageNet crops full images
    assert images.shape == (4, size, size, channels) and val_images.shape == images.shape
    assert labels.shape == (4,) and int(tf.reduce_max(labels)) < source.num_classes
    assert np.isfinite(images.numpy()).all()
    assert mean == list(config.data.mean)


def gradient_image(height, width):
    """An image whose pixels say where they are: red = row, green = column."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows * 255 // height, cols * 255 // width, np.zeros_like(rows)], -1).astype(
        np.uint8
    )


def test_random_size_crop_draws_windows_within_the_area_range():
    image = tf.constant(gradient_image(120, 160))
    areas = []
    for index in range(40):
        seed = tf.constant([0, index], tf.int64)
        begin, window, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            tf.zeros([1, 0, 4]),
            seed=seed,
            min_object_covered=0.0,
            aspect_ratio_range=[0.75, 4 / 3],
            area_range=[0.25, 0.5],
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        areas.append(int(window[0]) * int(window[1]) / (120 * 160))
        crop = random_size_crop(image, seed, (32, 32), [0.25, 0.5], [0.75, 4 / 3], 3)
        assert crop.shape == (32, 32, 3) and crop.dtype == tf.float32
        # the crop's corners are the window's: the gradient says where it was taken
        top_row = float(crop[0, :, 0].numpy().mean()) * 255
        assert abs(top_row - int(begin[0]) * 255 // 120) < 10
    assert min(areas) > 0.2 and max(areas) < 0.55 and len(set(areas)) > 10


def test_random_size_crop_of_encoded_images_equals_that_of_decoded_ones():
    image = gradient_image(90, 130)
    seed = tf.constant([3, 7], tf.int64)
    args = (seed, (40, 40), [0.08, 1.0], [0.75, 4 / 3], 3)
    decoded = random_size_crop(tf.constant(image), *args)
    png = random_size_crop(tf.io.encode_png(image), *args)
    np.testing.assert_array_equal(png.numpy(), decoded.numpy())
    jpeg_bytes = tf.io.encode_jpeg(image, quality=100)
    jpeg_decoded = random_size_crop(tf.io.decode_jpeg(jpeg_bytes), *args)
    jpeg = random_size_crop(jpeg_bytes, *args)  # decodes only the window
    np.testing.assert_allclose(jpeg.numpy(), jpeg_decoded.numpy(), atol=2 / 255)


def test_cutout_sets_one_square_to_zero_clipped_at_the_borders():
    image = tf.ones((32, 32, 3))
    sides = []
    for index in range(30):
        out = cutout(image, tf.constant([0, index], tf.int64), 8).numpy()
        np.testing.assert_array_equal(out[..., 0], out[..., 2])  # every channel alike
        rows, cols = np.nonzero(out[..., 0] == 0)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        # one axis-aligned rectangle of zeros, 8 x 8 unless cut by a border
        assert len(rows) == height * width and height <= 8 and width <= 8
        assert (out != 0).sum() == 3 * (1024 - len(rows))
        sides.append((height, width, rows.min(), cols.min()))
    assert (8, 8) in {s[:2] for s in sides} and min(min(s[:2]) for s in sides) < 8
    assert len({s[2:] for s in sides}) > 10  # the place varies with the seed
    again = cutout(image, tf.constant([0, 3], tf.int64), 8)
    np.testing.assert_array_equal(again, cutout(image, tf.constant([0, 3], tf.int64), 8))


def test_centre_crop_evaluation_is_the_papers_256_to_224():
    image = gradient_image(256, 320)
    crop = centre_crop(tf.constant(image), 0.875)
    np.testing.assert_array_equal(crop.numpy(), image[16:240, 48:272])
    # from encoded bytes, resized: the central 224 of the short side, at the model's size
    evaluated = eval_image(tf.io.encode_png(image), (112, 112), 3, 0.875)
    expected = tf.image.resize(image[16:240, 48:272].astype(np.float32), (112, 112)) / 255
    np.testing.assert_allclose(evaluated.numpy(), expected.numpy(), atol=1 / 255)
    whole = eval_image(tf.io.encode_png(image), (64, 64), 3, 1.0)  # 1: the whole image
    assert whole.shape == (64, 64, 3)


def test_synthetic_data_has_both_recipes_formats():
    imagenet = load_source(make_config("data=synthetic_imagenet", "data.synthetic.images=4").data)
    image, label = next(iter(imagenet.train))
    assert imagenet.encoded and image.dtype == tf.string and tf.io.is_jpeg(image)
    assert tf.io.decode_jpeg(image).shape == (375, 500, 3) and 0 <= int(label) < 1000
    cifar = load_source(make_config("data=synthetic_cifar", "data.synthetic.images=4").data)
    image, _ = next(iter(cifar.train))
    assert not cifar.encoded and image.dtype == tf.uint8 and image.shape == (32, 32, 3)


def counted_source(count):
    """A Source of `count` training examples labelled with their index, and the number of
    examples read from it so far."""
    reads = tf.Variable(0, dtype=tf.int64)

    def read(image, label):
        reads.assign_add(1)
        return image, label

    examples = tf.data.Dataset.from_tensor_slices((np.zeros((count, 8, 8, 1)), np.arange(count)))
    source = Source(examples.map(read), examples, count, count, count, [], (8, 8, 1))
    return source, reads


@pytest.mark.parametrize("cache", [True, False])
def test_each_epoch_is_a_pass_in_its_own_order_and_resuming_reads_no_earlier_epoch(cache):
    count, batch, steps = 50, 8, 6  # 6 steps an epoch; 2 examples of each pass left out
    source, reads = counted_source(count)
    keras.utils.set_random_seed(0)  # as a run with trainer.seed=0 sets it
    data = make_config(f"data.cache={cache}").data

    def labels(start_step, examples):
        order = training_order(source, data, batch, seed=3, start_step=start_step)
        positions, labels = zip(*[(int(i), int(x[1])) for i, x in order.take(examples)])
        assert positions == tuple(range(start_step * batch, start_step * batch + examples))
        return list(labels)

    whole = labels(0, 5 * steps * batch)  # five epochs
    assert reads.numpy() == (count if cache else 5 * count)  # a cache fills in epoch 1
    epochs = [whole[e * steps * batch : (e + 1) * steps * batch] for e in range(5)]
    assert all(len(set(epoch)) == steps * batch for epoch in epochs)  # no example twice
    assert len({tuple(epoch) for epoch in epochs}) == 5  # each epoch in its own order
    for start_step in (3 * steps, 3 * steps + 2):  # resumed at an epoch's end, and in it
        reads.assign(0)
        assert labels(start_step, batch) == whole[start_step * batch :][:batch]
        # the shuffle buffer holds the whole pass: one pass read, none before it
        assert reads.numpy() == count


def test_each_workers_pipeline_takes_its_replicas_part_of_every_global_batch():
    count, batch, workers, replicas = 50, 8, 2, 4  # two replicas on each worker
    source, _ = counted_source(count)
    data = make_config().data

    def labels(context=None, steps=4):
        pipeline = train_pipeline(source, data, batch, 3, [0.0], [1.0], 2, context)
        return [b[1].numpy().tolist() for b in pipeline.take(steps)]

    whole = labels()  # global batches of 8 from step 2
    parts = [
        labels(tf.distribute.InputContext(workers, worker, replicas), steps=8)
        for worker in range(workers)
    ]
    for step, global_batch in enumerate(whole):
        # a worker's replicas take consecutive per-replica batches of its pipeline
        got = [parts[w][2 * step + r] for w in range(workers) for r in range(2)]
        assert [len(part) for part in got] == [2, 2, 2, 2]
        assert sum(got, []) == global_batch


@pytest.mark.parametrize("cache", [True, False])
def test_validation_is_padded_to_whole_batches_and_split_among_workers(cache):
    count, batch, workers, replicas = 50, 8, 2, 4  # 7 global batches: 50 images, 6 blanks
    source, reads = counted_source(count)
    source = dataclasses.replace(source, val=source.train)  # validation reads counted
    data = make_config(f"data.cache={cache}").data

    def batches(context=None):
        pipeline = val_pipeline(source, data, batch, [0.0], [1.0], context)
        first, second = (
            [[x.tolist() for x in b[1:]] for b in pipeline.as_numpy_iterator()] for _ in range(2)
        )
        assert first == second  # (labels, weights) of each batch: the same every epoch
        return first

    whole = batches()
    assert reads.numpy() == (count if cache else 2 * count)  # the cache filled in epoch 1
    assert len(whole) == 7 and all(len(labels) == batch for labels, _ in whole)
    labels, weights = (sum(column, []) for column in zip(*whole))
    assert labels[:count] == list(range(count)) and weights == [1.0] * count + [0.0] * 6
    parts = [
        batches(tf.distribute.InputContext(workers, worker, replicas)) for worker in range(workers)
    ]
    # as many batches on each worker, though the last global batch holds images of the
    # first worker's replicas only
    assert [len(part) for part in parts] == [2 * 7, 2 * 7]
    for step, (labels, weights) in enumerate(whole):
        got = [parts[w][2 * step + r] for w in range(workers) for r in range(2)]
        assert [sum(column, []) for column in zip(*got)] == [labels, weights]


def test_a_runs_validation_stream_repeats_one_padded_pass_after_another():
    config = make_config()
    source = load_source(config.data)  # 360 validation digits: 6 batches of 64, 24 blanks
    _, val, _ = make_pipelines(source, config.data, 64, seed=0)
    steps = val_steps(source, 64)
    stream = val.as_numpy_iterator()  # one iterator for the whole run, as train() keeps it
    passes = [[next(stream) for _ in range(steps)] for _ in range(3)]
    for later in passes[1:]:  # each epoch's evaluation: the same batches, in one order
        for batch, again in zip(passes[0], later):
            assert all(np.array_equal(x, y) for x, y in zip(batch, again))
    weights = np.concatenate([weights for *_, weights in passes[0]])
    assert steps == 6 and weights.sum() == source.num_val == 360


def test_a_validation_file_cut_short_is_skipped_and_every_worker_keeps_its_batches():
    images = [tf.io.encode_png(gradient_image(16, 16)).numpy() for _ in range(10)]
    images[3] = images[3][: len(images[3]) // 2]  # a PNG's first bytes, then nothing
    examples = tf.data.Dataset.from_tensor_slices((images, np.arange(10)))
    source = Source(examples, examples, 10, 10, 10, [], (8, 8, 3), encoded=True)
    data = make_config("data.bad_images=skip").data

    def batches(context=None):  # 3 global batches of 4
        pipeline = val_pipeline(source, data, 4, [0.0] * 3, [1.0] * 3, context)
        return [(b[1].tolist(), b[2].tolist()) for b in pipeline.as_numpy_iterator()]

    labels, weights = (sum(column, []) for column in zip(*batches()))
    assert weights == [1.0] * 9 + [0.0] * 3 and labels[:9] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    parts = [batches(tf.distribute.InputContext(2, worker, 2)) for worker in range(2)]
    assert [len(part) for part in parts] == [3, 3]  # a worker's one replica: batches of 2
    assert sum(sum(w) for part in parts for _, w in part) == 9  # each image once


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_label_smoothing_trains_on_the_smoothed_targets(smoothing):
    strategy = tf.distribute.get_strategy()
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], np.float32)
    labels = np.array([0, 1], np.int32)
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(3, kernel_initializer="identity", use_bias=False)(inputs)
    model = keras.Model(inputs, outputs)  # logits = inputs
    optimizer = keras.optimizers.SGD(0.0)
    optimizer.build(model.trainable_variables)
    loop = TrainingLoop(strategy, model, optimizer, 2, 0.0, False, label_smoothing=smoothing)
    iterator = iter(tf.data.Dataset.from_tensors((logits, labels)).repeat())
    loop.train_steps(iterator, tf.constant(1))
    targets = np.full((2, 3), smoothing / 3) + np.eye(3)[labels] * (1 - smoothing)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = float(-(targets * log_probs).sum(1).mean())
    assert loop.results("train")["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.augment.scale=[0.5,0.1]", "data.augment.scale: give [low, high]"),
        ("data.eval_crop=1.5", "data.eval_crop: must be between 0.1 and 1.0"),
        ("data.augment.cutout=-4", "data.augment.cutout: must be between 0 and 32"),
        ("trainer.label_smoothing=1.0", "trainer.label_smoothing: must be between"),
        ("paper=table99", "paper: unknown value 'table99'"),
    ],
)
def test_recipe_settings_out_of_range_are_config_errors(override, message):
    from sectrain.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        make_config(override)


def test_experiment_folder_is_listed():
    assert {"imagenet_recipe", "cifar_recipe", "digits_se_vs_plain"} <= set(EXPERIMENTS)
    assert Path(CONFIG_DIR / "data" / "imagenet.yaml").is_file()


@pytest.mark.parametrize("manual_dir", [True, False])
def test_imagenet_without_its_archives_says_where_they_go(tmp_path, manual_dir):
    from sectrain.errors import ConfigError

    data = ["data=imagenet"] if manual_dir else ["data=tfds", "data.name=imagenet2012"]
    given = [f"data.manual_dir={tmp_path}/manual"] if manual_dir else []  # else TFDS's own
    config = make_config(*data, f"data.data_dir={tmp_path}/tfds", *given)
    with pytest.raises(ConfigError) as error:
        load_source(config.data)
    message = str(error.value)
    assert "'imagenet2012' could not be prepared" in message
    assert "ILSVRC2012_img_train.tar" in message  # TFDS's instructions
    now = f" (now {tmp_path}/manual)" if manual_dir else ""
    assert message.endswith(f"The folder is set by data.manual_dir=DIR{now}")


def test_a_failed_download_says_how_to_train_without_internet(tmp_path, monkeypatch):
    import requests

    from sectrain.errors import ConfigError

    def offline(*args, **kwargs):  # what TFDS raises once its retries are spent
        raise requests.ConnectionError("Max retries exceeded with url: /cifar-10-binary.tar.gz")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    config = make_config("data=cifar10", f"data.data_dir={tmp_path}")
    with pytest.raises(ConfigError, match="Max retries exceeded.*Without internet here"):
        load_source(config.data)
