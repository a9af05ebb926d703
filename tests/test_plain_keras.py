"""Standalone students are plain Keras networks: built-in layers only, loadable without mfef_keras on any backend."""

import importlib.util
import subprocess
import sys

import keras
import numpy as np
import pytest

from mfef_keras.data import dataset_info
from mfef_keras.distill import OnlineDistiller
from mfef_keras.layers import BatchNorm, ImageNormalization
from mfef_keras.models import build_students, get_backbone, to_plain_keras
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import save_student_dir
from mfef_keras.zoo.manifest import read_manifest, shipped_manifest_path
from tests.helpers import subprocess_env

SHAPE = (32, 32, 1)
CLASSES = 10
SHIPPED = sorted(name for name, entry in read_manifest(shipped_manifest_path()).items() if "url" not in entry)


def _randomise(model: keras.Model, seed: int = 0) -> None:
    """Weights far from their initial values (BatchNorm moving statistics included), as after training."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        low = 0.5 if variable.path.endswith("moving_variance") else -0.5
        variable.assign(rng.uniform(low, low + 1.0, size=variable.shape).astype(variable.dtype))


def _images(count: int = 4) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(count, *SHAPE)).astype("float32")


def _run_script(script: str, *args: str, cwd, **env: str) -> str:
    """Run ``script`` in a fresh Python process; its stdout, after asserting that it succeeded."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=subprocess_env(**env),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _package_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in [model, *model.layers] if type(layer).__module__.startswith("mfef_keras")]


@pytest.mark.parametrize("topology", ["independent", "shared_trunk"])
def test_to_plain_keras_uses_builtin_batch_norm_with_the_same_weights_and_outputs(topology):
    students = build_students("resnet8", CLASSES, 2, topology=topology, input_shape=SHAPE, base_width=4)
    for student in students:
        _randomise(student)
    images = _images()
    for student in students:
        plain = to_plain_keras(student)
        assert any(isinstance(layer, BatchNorm) for layer in student.layers)
        norms = [layer for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all(type(layer) is keras.layers.BatchNormalization for layer in norms)
        assert _package_layers(plain) == []
        assert [layer.name for layer in plain.layers] == [layer.name for layer in student.layers]
        assert [w.path for w in plain.weights] == [w.path for w in student.weights]
        for original, copy in zip(student.weights, plain.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(copy), keras.ops.convert_to_numpy(original))
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(plain(images, training=False)),
            keras.ops.convert_to_numpy(student(images, training=False)),
        )


def test_synchronized_batch_norm_is_dropped_and_layers_without_a_builtin_are_refused():
    student = get_backbone("resnet8", CLASSES, input_shape=SHAPE, sync_batchnorm=True, base_width=4)
    assert all(layer.synchronized for layer in student.layers if isinstance(layer, BatchNorm))
    plain = to_plain_keras(student)
    assert not any(layer.synchronized for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization))

    images = keras.Input(SHAPE)
    model = keras.Model(images, ImageNormalization(mean=(0.5,), std=(0.25,), name="norm")(images))
    with pytest.raises(ValueError, match="'norm' \\(ImageNormalization\\) has no Keras built-in equivalent"):
        to_plain_keras(model)


def test_get_student_is_a_plain_snapshot_and_from_config_keeps_the_training_layers():
    distiller = OnlineDistiller(
        build_students("resnet8", CLASSES, 2, topology="shared_trunk", input_shape=SHAPE, base_width=4), method="dml"
    )
    _randomise(distiller.students_net)
    images = _images()
    student = distiller.get_student(1)
    before = distiller.predict(images, verbose=0)["s1"]
    assert _package_layers(student) == []
    np.testing.assert_allclose(student.predict(images, verbose=0), before, atol=1e-6)

    # The student holds its own copy: training the distiller further does not change it.
    _randomise(distiller.students_net, seed=1)
    assert not np.allclose(distiller.predict(images, verbose=0)["s1"], before, atol=1e-3)
    np.testing.assert_allclose(student.predict(images, verbose=0), before, atol=1e-6)

    rebuilt = OnlineDistiller.from_config(distiller.get_config())
    assert any(isinstance(layer, BatchNorm) for layer in rebuilt.students_net.layers)


@pytest.fixture(scope="module")
def written_student(tmp_path_factory):
    """A distiller's student saved as `mfef train` saves it, with images and the logits the distiller gave them."""
    root = tmp_path_factory.mktemp("written")
    students = build_students(
        "resnet8", CLASSES, 2, topology="shared_trunk", input_shape=SHAPE, sync_batchnorm=True, base_width=4
    )
    distiller = OnlineDistiller(students, method="dml")
    _randomise(distiller.students_net)
    images = _images(5)
    np.save(root / "images.npy", images)
    np.save(root / "logits.npy", distiller.predict(images, verbose=0)["s1"])
    save_student_dir(root / "student", distiller.get_student(1), StudentCard(dataset_info("digits")))
    return root


# Run in a child that never imports mfef_keras: only what Keras itself knows may be needed.
_LOAD_WITH_PLAIN_KERAS = """
import os, sys
root, backend = sys.argv[1], sys.argv[2]
os.environ["KERAS_BACKEND"] = backend
import keras
import numpy as np

assert keras.backend.backend() == backend
model = keras.saving.load_model(os.path.join(root, "student", "model.keras"))
# One input tensor, as keras.applications models have, not a list of one.
assert isinstance(model.input, keras.KerasTensor), model.input
logits = keras.ops.convert_to_numpy(model.predict(np.load(os.path.join(root, "images.npy")), verbose=0))
np.testing.assert_allclose(logits, np.load(os.path.join(root, "logits.npy")), rtol=0, atol=1e-5)
modules = {type(layer).__module__ for layer in [model, *model.layers]}
assert all(module.startswith("keras.") for module in modules), modules
assert not [name for name in sys.modules if name.split(".")[0] == "mfef_keras"]
print("loaded", len(model.layers), "layers")
"""


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.needs_jax)])
def test_a_saved_student_loads_with_plain_keras_in_a_fresh_process(written_student, backend, tmp_path):
    assert "loaded" in _run_script(_LOAD_WITH_PLAIN_KERAS, str(written_student), backend, cwd=tmp_path)


# Whatever loads a student must register the package's layers itself: nothing else here imports them.
_LOAD_OLD_STUDENT = """
import sys
from mfef_keras.student_dir import load_keras_file, load_student_dir

assert "mfef_keras.layers" not in sys.modules
model, _ = load_student_dir(sys.argv[1])
bare = load_keras_file(sys.argv[1] + "/model.keras")
print(sorted({type(layer).__name__ for layer in model.layers + bare.layers}))
"""


def test_students_saved_with_the_package_layers_still_load_in_a_fresh_process(tmp_path):
    # Students were saved with the package's BatchNorm before they became plain Keras networks.
    old = get_backbone("resnet8", CLASSES, input_shape=SHAPE, base_width=4)
    save_student_dir(tmp_path / "old", old, StudentCard(dataset_info("digits")))
    output = _run_script(_LOAD_OLD_STUDENT, str(tmp_path / "old"), cwd=tmp_path, KERAS_BACKEND="tensorflow")
    assert "'BatchNorm'" in output


# The shipped presets, loaded the way a user without the package would: plain Keras, any backend. One process
# loads them all (each process pays Keras's start-up).
_CHECK_SHIPPED_PRESETS = """
import os, sys
os.environ["KERAS_BACKEND"] = sys.argv[1]
import keras

for path in sys.argv[2:]:
    model = keras.saving.load_model(path)
    strided = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l.strides != (1, 1)]
    padded = [l for l in strided if l.kernel_size != (1, 1)]
    assert padded, "no strided 3x3 convolution"
    for conv in padded:
        pad = model.get_layer(conv.name + "_pad")
        assert conv.padding == "valid" and pad.padding == ((1, 1), (1, 1)), conv.name
    assert all(type(l).__module__.startswith("keras.") for l in model.layers)
    print("symmetric", len(padded))
assert not [name for name in sys.modules if name.split(".")[0] == "mfef_keras"]
"""


# About 12 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_shipped_presets_are_plain_keras_with_the_reference_padding(tmp_path, monkeypatch):
    from mfef_keras.zoo.resolve import resolve_preset

    monkeypatch.setenv("MFEF_ZOO_CACHE", str(tmp_path / "cache"))
    models = [str(resolve_preset(name, offline=True) / "model.keras") for name in SHIPPED]
    backend = "jax" if importlib.util.find_spec("jax") else "tensorflow"
    output = _run_script(_CHECK_SHIPPED_PRESETS, backend, *models, cwd=tmp_path)
    assert output.splitlines()[-len(SHIPPED) :] == ["symmetric 2"] * len(SHIPPED), output
