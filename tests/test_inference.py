"""Own images end to end through the commands: train on a folder, evaluate, predict, export."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from sectrain.config import DataConfig
from sectrain.data.sources import load_folder
from sectrain.errors import ConfigError
from sectrain.inference.artifacts import load_trained
from sectrain.models import build_model
from tests.helpers import SE
from tests.test_cli import imported_tensorflow, sectrain

pytestmark = pytest.mark.xdist_group("inference")  # `trained_run` trains once
CLASSES = ("0", "1", "2")
FORMATS = ("png", "jpeg", "png", "bmp", "gif")  # every reader, PNG most often


def write_digit_folder(root, per_class=40):
    """Real digits as 32x32 RGB image files, one sub-folder per class, mixed formats."""
    digits = load_digits()
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        images = digits.images[digits.target == int(name)][:per_class]
        for i, image in enumerate(images):
            pixels = np.uint8(image / 16 * 255)
            picture = Image.fromarray(pixels).resize((32, 32)).convert("RGB")
            picture.save(root / name / f"{i}.{FORMATS[i % len(FORMATS)]}")
    return root


def command(name, *args, importtime=False):
    """Runs `sectrain-NAME ARGS...` (`-X importtime` lists the modules it imports)."""
    return subprocess.run(
        [
            sys.executable,
            *(["-X", "importtime"] if importtime else []),
            "-c",
            f"import sys; from sectrain.inference.{name} import main; sys.exit(main())",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    images = write_digit_folder(tmp_path_factory.mktemp("images"))
    run_dir = tmp_path_factory.mktemp("run")
    result = sectrain(
        "data=folder",
        f"data.path={images}",
        "trainer.epochs=12",
        "trainer.global_batch_size=16",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    return images, run_dir


def test_training_on_a_folder_records_its_classes(trained_run):
    _, run_dir = trained_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["classes"] == list(CLASSES)
    assert summary["image_shape"] == [32, 32, 3] and len(summary["normalization"]["mean"]) == 3
    assert summary["final"]["val_top1"] > 0.5  # three well-separated digits


def test_a_run_fine_tunes_a_trained_model_and_resumes_without_it(trained_run, tmp_path):
    images, run_dir = trained_run
    two_classes = tmp_path / "images"
    for name in CLASSES[:2]:
        shutil.copytree(images / name, two_classes / name)
    trained = shutil.copy(run_dir / "model.keras", tmp_path / "trained.keras")
    run = [
        "data=folder",
        f"data.path={two_classes}",
        f"model.init_from={trained}",
        "trainer.global_batch_size=16",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = sectrain(*run, "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "run" / "sectrain.log").read_text()
    assert f"start from {trained}" in log and "predictions (other weight shapes)" in log
    Path(trained).unlink()  # a resumed run reads its checkpoint, not model.init_from
    result = sectrain(*run, "trainer.epochs=2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["status"], summary["classes"]) == ("completed", list(CLASSES[:2]))
    assert "resumed from" in (tmp_path / "run" / "sectrain.log").read_text()


def test_a_missing_model_to_start_from_exits_2(tmp_path):
    result = sectrain(
        f"model.init_from={tmp_path / 'none.keras'}", "trainer.epochs=1", importtime=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not imported_tensorflow(result)  # found before TensorFlow loads
    error = next(line for line in result.stderr.splitlines() if "model.init_from: '" in line)
    assert "is neither a run folder with model.keras" in error  # on the same line


def test_train_and_val_subfolders_are_used_as_given(tmp_path):
    write_digit_folder(tmp_path / "train", per_class=10)
    write_digit_folder(tmp_path / "val", per_class=4)
    source = load_folder(DataConfig(source="folder", path=str(tmp_path)))
    assert (source.num_train, source.num_val, source.class_names) == (30, 12, list(CLASSES))


def test_eval_reports_metrics_per_class_and_a_confusion_matrix(trained_run):
    _, run_dir = trained_run
    result = command("evaluate", str(run_dir))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "eval" / "eval_val.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert metrics["images"] == 24 and [r["class"] for r in metrics["per_class"]] == list(CLASSES)
    assert metrics["top1"] == pytest.approx(summary["final"]["val_top1"], abs=1e-6)
    assert np.array(metrics["confusion"]).sum() == 24
    png = (run_dir / "eval" / "confusion_val.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "top-1" in result.stdout


def test_eval_with_an_override_the_config_cannot_take_exits_2(trained_run):
    _, run_dir = trained_run
    result = command("evaluate", str(run_dir), "model.options.growth_rate=24", importtime=True)
    assert result.returncode == 2
    assert "use +model.options.growth_rate=24" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not imported_tensorflow(result)  # found before the model loads


def test_a_run_whose_summary_json_was_cut_short_exits_2(trained_run, tmp_path):
    _, run_dir = trained_run
    shutil.copy(run_dir / "model.keras", tmp_path)
    (tmp_path / "summary.json").write_text('{"classes": ["a", ')
    result = command("evaluate", str(tmp_path))
    assert result.returncode == 2
    assert "cannot be read (Expecting value" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_eval_at_another_image_size_writes_beside_the_results_at_its_own(trained_run):
    _, run_dir = trained_run
    result = command("evaluate", str(run_dir), "data.image_size=48")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "eval" / "eval_val_48x48.json").read_text())
    assert metrics["image_size"] == [48, 48] and metrics["images"] == 24
    assert (run_dir / "eval" / "confusion_val_48x48.png").is_file()
    assert "48x48 images" in result.stdout and "trained on 32x32 images" in result.stdout


def test_eval_records_the_gates_of_each_se_block_per_class(trained_run, tmp_path):
    _, run_dir = trained_run
    result = command("evaluate", str(run_dir), "--excitations", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval_val.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert metrics["top1"] == pytest.approx(summary["final"]["val_top1"], abs=1e-6)
    saved = np.load(tmp_path / "excitations_val.npz")
    assert list(saved["classes"]) == list(CLASSES) and list(saved["images_per_class"]) == [8] * 3
    blocks = [name for name in saved.files if name.endswith("_se")]
    assert len(blocks) == 9  # SE-ResNet-20: three stages of three units
    assert saved["conv4_block3_se"].shape == (3, 64)
    assert all(((saved[b] > 0) & (saved[b] < 1)).all() for b in blocks)
    assert (tmp_path / "excitations_val.png").read_bytes().startswith(b"\x89PNG")
    assert "class spread" in result.stdout and "conv4_block3_se" in result.stdout

    resized = command(
        "evaluate", str(run_dir), "--excitations", "data.image_size=48", "--output", str(tmp_path)
    )
    assert resized.returncode == 0, resized.stderr
    at_48 = np.load(tmp_path / "excitations_val_48x48.npz")
    assert sorted(at_48.files) == sorted(saved.files)
    assert not np.allclose(at_48["conv4_block3_se"], saved["conv4_block3_se"])


def test_a_model_for_one_image_size_takes_no_other(tmp_path):
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    keras.Model(inputs, keras.layers.Dense(10)(flat)).save(tmp_path / "flat.keras")
    trained = load_trained(tmp_path / "flat.keras")
    assert trained.at_image_size(8, 8) is trained
    with pytest.raises(ConfigError, match="data.image_size: the model takes 8x8 images only"):
        trained.at_image_size(32, 32)


def test_a_network_with_global_pooling_takes_any_image_size_with_its_weights(tmp_path):
    model = build_model("cifar_resnet20", num_classes=10, input_shape=(32, 32, 3), attention=SE)
    model.save(tmp_path / "model.keras")
    trained = load_trained(tmp_path / "model.keras")
    larger = trained.at_image_size(48, 40)
    assert larger.image_shape == (48, 40, 3) and trained.image_shape == (32, 32, 3)
    assert larger.model.get_layer("predictions") is trained.model.get_layer("predictions")
    assert larger.model(np.zeros((2, 48, 40, 3))).shape == (2, 10)


def test_predict_prints_and_writes_top_k_for_a_folder(trained_run):
    images, run_dir = trained_run
    # options may stand between the positional arguments
    result = command("predict", str(run_dir), "--top-k", "2", str(images / "2"))
    assert result.returncode == 0, result.stderr
    rows = json.loads((run_dir / "predictions" / "predictions.json").read_text())
    assert len(rows) == 40 and all(len(r["top"]) == 2 for r in rows)
    assert sum(r["top"][0][0] == "2" for r in rows) > 20
    assert all(r["top"][0][1] >= r["top"][1][1] for r in rows)
    csv_lines = (run_dir / "predictions" / "predictions.csv").read_text().splitlines()
    assert (
        csv_lines[0] == "file,class_1,probability_1,class_2,probability_2" and len(csv_lines) == 41
    )


def test_predict_without_a_decodable_image_exits_2(trained_run, tmp_path):
    _, run_dir = trained_run
    (tmp_path / "notes.png").write_text("not an image")
    result = command("predict", str(run_dir), str(tmp_path), "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "skipped" in result.stdout and "none of the 1 files is a decodable image" in result.stderr
    )
    assert not (tmp_path / "out").exists()


SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
files = sys.argv[3:]
encoded = tf.constant([open(f, "rb").read() for f in files])
by_bytes = model.signatures["serving_default"](image_bytes=encoded)
pixels = tf.stack([tf.io.decode_image(e, channels=3, expand_animations=False) for e in encoded])
by_pixels = model.signatures["predict_images"](images=tf.cast(pixels, tf.float32) / 255.0)
np.savez(
    sys.argv[2],
    bytes=by_bytes["probabilities"].numpy(),
    pixels=by_pixels["probabilities"].numpy(),
    names=by_bytes["class_name"].numpy().astype(str),
)
assert not [m for m in sys.modules if m.startswith("sectrain")], "sectrain was imported"
"""


def test_exported_savedmodel_serves_the_same_predictions_without_sectrain(trained_run, tmp_path):
    images, run_dir = trained_run
    result = command("export", str(run_dir), "--output", str(tmp_path / "saved"))
    assert result.returncode == 0, result.stderr
    files = [str(images / name / f"{i}.{FORMATS[i % 5]}") for name in CLASSES for i in (0, 1, 3)]
    served = subprocess.run(
        [sys.executable, "-c", SERVE, str(tmp_path / "saved"), str(tmp_path / "out.npz"), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr
    out = np.load(tmp_path / "out.npz")

    import tensorflow as tf

    trained = load_trained(run_dir)
    inputs = trained.read_images(tf.constant([Path(f).read_bytes() for f in files]))
    expected = tf.nn.softmax(trained.model(inputs, training=False)).numpy()
    np.testing.assert_allclose(out["bytes"], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["pixels"], expected, rtol=1e-4, atol=1e-6)
    assert list(out["names"]) == [CLASSES[i] for i in expected.argmax(1)]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "is not a folder"),
        (lambda root: (root / "only").mkdir(parents=True), "at least two classes"),
    ],
    ids=["missing", "one_class"],
)
def test_bad_image_folders_exit_2_with_a_message(setup, message, tmp_path):
    root = tmp_path / "images"
    setup(root)
    result = sectrain("data=folder", f"data.path={root}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("predict", ["{run}", "{missing}"], "no such file or folder"),
        ("predict", ["{missing}", "{image}"], "neither a run folder"),
        ("evaluate", ["{missing}"], "neither a run folder"),
        ("export", ["{missing}"], "neither a run folder"),
        ("export", ["{run}", "--output", "{run}"], "is not a SavedModel to replace"),
        ("predict", ["{run}", "{image}", "--top-k", "0"], "must be at least 1. Received: 0"),
    ],
)
def test_wrong_paths_exit_2_before_tensorflow_loads(name, args, message, tmp_path):
    paths = {"run": tmp_path, "missing": tmp_path / "missing", "image": tmp_path / "a.png"}
    paths["image"].write_bytes(b"")
    result = command(name, *(a.format(**paths) for a in args), importtime=True)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not imported_tensorflow(result)
