"""Export (ONNX, SavedModel, int8/fp16), parity, metadata, Predictor and the export/predict commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from mfef_keras.data.image_folder import read_image
from mfef_keras.data.info import DatasetInfo
from mfef_keras.export import (
    ExportError,
    ParityError,
    PredictError,
    Predictor,
    export_student,
    onnx_export,
    runtime,
)
from mfef_keras.export.commands import export_command, predict_command
from mfef_keras.export.formats import FORMATS
from mfef_keras.export.images import load_images
from mfef_keras.export.metadata import sha256_file, sha256_path
from mfef_keras.models import get_backbone
from mfef_keras.normalization import normalize
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import save_student_dir
from tests.bad_images import png_bomb

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (32, 32, 1)
CLASSES = tuple(f"wave{i}" for i in range(10))


def toy_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stripes whose frequency and direction give the class: learnable in seconds by a tiny ResNet."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    grid = np.arange(32, dtype=np.float32)
    frequency = np.array([2, 3, 4, 6, 8] * 2, np.float32) / 32
    waves = np.sin(2 * np.pi * frequency[labels, None] * grid + rng.uniform(0, 2 * np.pi, (count, 1)))
    images = np.where((labels < 5)[:, None, None], waves[:, None, :], waves[:, :, None])
    images = 128 + 90 * images + rng.normal(0, 20, (count, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8)[..., None], labels


def toy_info(name: str = "toy-waves") -> DatasetInfo:
    return DatasetInfo(name, 10, CLASSES, SHAPE, (0.5,), (0.3,), {"train": 600, "test": 200})


@pytest.fixture(scope="module")
def data():
    return {"train": toy_images(600, 0), "test": toy_images(200, 1)}


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, data):
    """A tiny ResNet-8 trained for a few epochs on the stripes, saved as a student directory."""
    keras.utils.set_random_seed(0)
    model = get_backbone("resnet8", 10, input_shape=SHAPE, base_width=4)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    info = toy_info()
    images, labels = data["train"]
    model.fit(normalize(images, info.mean, info.std), labels, batch_size=32, epochs=4, verbose=0)
    return save_student_dir(
        tmp_path_factory.mktemp("student") / "student", model, StudentCard(info, backbone="resnet8")
    )


@pytest.fixture(scope="module")
def student(student_dir):
    return keras.saving.load_model(student_dir / "model.keras")


@pytest.fixture(scope="module")
def full_export(tmp_path_factory, student_dir, data):
    """ONNX + SavedModel + int8, validated on the toy test split, calibrated on its train split."""
    out = tmp_path_factory.mktemp("exports") / "full"
    report = export_student(
        student_dir,
        out,
        "all",
        quantize="int8",
        validation_data=data["test"],
        calibration_images=data["train"][0],
        calibration_samples=256,
    )
    return out, report


def _keras_logits(model, raw):
    info = toy_info()
    return model.predict(normalize(raw, info.mean, info.std), verbose=0)


def test_full_export_files_parity_and_accuracy(full_export):
    out, report = full_export
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.int8.onnx", "model.onnx", "saved_model"]
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    fp32 = [r for r in report.parity if r.tolerance is not None]
    # "all" writes every registered format, each where the registry says, and checks its parity.
    assert {r.artifact for r in fp32} == set(FORMATS)
    assert all(report.artifacts[name] == out / FORMATS.get(name) for name in FORMATS)
    for result in fp32:
        assert result.passed and result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0
    random_batches = [r for r in report.parity if r.data.startswith("10 random uint8")]
    assert all(r.batch_sizes == (1, 2, 7) for r in random_batches)
    # Identical top-1 classes give identical accuracies; the student learnt the stripes.
    accuracy = report.accuracy
    assert accuracy["keras"] == accuracy["onnx"] == accuracy["saved_model"] > 0.8
    quantization = report.quantization
    assert quantization["accuracy_change"] == pytest.approx(accuracy["onnx_int8"] - accuracy["onnx"])
    assert abs(quantization["accuracy_change"]) <= 0.05
    assert quantization["calibration"] == "256 given images"
    assert quantization["bytes_fp32"] == (out / "model.onnx").stat().st_size
    assert "Top-1 accuracy" in report.summary() and "int8" in report.summary()


def test_metadata_content_and_hashes(full_export, student_dir):
    out, report = full_export
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata == json.loads(json.dumps(report.metadata))
    assert metadata["class_names"] == list(CLASSES)
    assert metadata["input"] == {
        "name": "images",
        "shape": [None, 32, 32, 1],
        "layout": "NHWC",
        "dtype": "uint8",
        "preprocess": True,
        "expects": "raw pixel values 0..255",
    }
    assert metadata["normalization"] == {"mean": [0.5], "std": [0.3]}
    assert metadata["opset"] == 17 and metadata["dataset"] == "toy-waves"
    assert metadata["source"] == str(student_dir)
    assert metadata["source_sha256"] == sha256_file(student_dir / "model.keras")
    assert {"mfef-keras", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(metadata["versions"])
    assert {"tensorflow", "tensorflow-cpu"} & set(metadata["versions"])
    for name, entry in metadata["artifacts"].items():
        assert entry["sha256"] == sha256_path(out / entry["path"]), name
    assert metadata["artifacts"]["saved_model"]["signature"] == "serving_default"
    assert metadata["default_onnx"] == "model.int8.onnx"
    assert metadata["validation"]["accuracy"] == report.accuracy


def test_onnx_graph_interface_and_props(full_export):
    out, _ = full_export
    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] == [("", 17)]
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "images" and graph_output.name == "logits"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["batch", 32, 32, 1]
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["mfef.class_names"] == list(CLASSES) and props["mfef.input"]["dtype"] == "uint8"
    int8 = onnx.load(out / "model.int8.onnx")
    int8_props = {p.key: json.loads(p.value) for p in int8.metadata_props}
    assert int8_props["mfef.quantization"]["format"] == "QDQ"
    assert {n.op_type for n in int8.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}


def test_uint8_graph_equals_keras_on_normalised_input(full_export, student):
    out, _ = full_export
    raw = np.random.default_rng(5).integers(0, 256, (7, *SHAPE), dtype=np.uint8)
    expected = _keras_logits(student, raw)
    session = runtime.make_session(out / "model.onnx", providers=[runtime.CPU])
    output_name = session.get_outputs()[0].name
    for batch in (1, 2, 7):
        got = session.run([output_name], {session.get_inputs()[0].name: raw[:batch]})[0]
        np.testing.assert_allclose(got, expected[:batch], atol=1e-4)
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    np.testing.assert_allclose(serve(images=tf.constant(raw))["logits"].numpy(), expected, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")
def test_predictor_top_k_matches_keras(full_export, student, data):
    out, _ = full_export
    predictor = Predictor(out / "model.onnx")
    assert predictor.provider == "CPUExecutionProvider" and "CPUExecutionProvider" in repr(predictor)
    assert (
        predictor.image_shape == SHAPE and predictor.input_dtype == "uint8" and predictor.class_names == list(CLASSES)
    )
    images = data["test"][0][:20]
    probabilities = predictor.predict(images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    expected = _keras_logits(student, images).argmax(1)
    ranked = predictor.top_k(images, k=3)
    assert [row[0][0] for row in ranked] == [CLASSES[i] for i in expected]
    assert all(len(row) == 3 and row[0][1] >= row[1][1] >= row[2][1] for row in ranked)
    assert len(predictor.top_k(images[:1], k=50)[0]) == 10
    # onnxruntime's silent fallback from CUDA to the CPU is reported (spec §7, pitfall 7).
    with pytest.warns(RuntimeWarning, match="CUDA was requested but onnxruntime runs .* on CPUExecutionProvider"):
        assert Predictor(out / "model.onnx", providers=[runtime.CUDA, runtime.CPU]).provider == runtime.CPU
    # An export directory runs its float32 model unless asked for the int8 one.
    assert Predictor(out).path.name == "model.onnx" and Predictor(out, int8=True).path.name == "model.int8.onnx"


def test_predictor_rejects_bad_images(full_export, tmp_path):
    out, _ = full_export
    predictor = Predictor(out / "model.onnx")
    with pytest.raises(PredictError, match=r"\(2, 28, 28, 1\).*\(32, 32, 1\)"):
        predictor.predict(np.zeros((2, 28, 28, 1), np.uint8))
    with pytest.raises(PredictError, match=r"\(1, 32, 32, 3\)"):
        predictor.predict(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(PredictError, match="raw uint8"):
        predictor.predict(np.zeros((1, *SHAPE), np.float32))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    with pytest.raises(PredictError, match="Cannot load the ONNX model .*corrupt.onnx"):
        Predictor(corrupt)
    with pytest.raises(PredictError, match="No ONNX model"):
        Predictor(tmp_path)


def test_load_images_checks_size_and_channels(tmp_path):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "rgb.png")
    np.save(tmp_path / "batch.npy", np.zeros((3, 32, 32, 1), np.uint8))
    with pytest.raises(PredictError, match=r"small.png is 28x28 .*takes 32x32"):
        load_images([tmp_path / "small.png"], SHAPE, resize=False)
    with pytest.raises(PredictError, match=r"rgb.png has 3 channel\(s\) \(mode RGB\); the model takes 1"):
        load_images([tmp_path / "rgb.png"], SHAPE, resize=False)
    paths = [tmp_path / "rgb.png", tmp_path / "batch.npy", tmp_path / "small.png"]
    images, names, notes = load_images(paths, SHAPE)
    assert images.shape == (5, 32, 32, 1) and images.dtype == np.uint8
    assert names[1:4] == [f"{tmp_path / 'batch.npy'}[{i}]" for i in range(3)]
    assert notes == [
        f"{tmp_path / 'rgb.png'}: converted RGB to L (3 -> 1 channels)",
        f"{tmp_path / 'small.png'}: resized 28x28 to 32x32 (bilinear)",
    ]
    with pytest.raises(PredictError, match=r"batch.npy holds an array of shape \(3, 32, 32, 1\)"):
        load_images([tmp_path / "batch.npy"], (32, 32, 3))


def test_load_images_reads_files_as_training_does(tmp_path):
    """16-bit grayscale is scaled to 8 bits like a training folder's; bombs and FIFOs are refused, naming them."""
    deep = tmp_path / "deep.png"
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(values).save(deep)
    images, _, _ = load_images([deep], SHAPE)
    np.testing.assert_array_equal(images[0, ..., 0], np.rint(values * (255 / 65535)).astype(np.uint8))
    np.testing.assert_array_equal(images[0], read_image(str(deep), *SHAPE))
    png_bomb(tmp_path / "bomb.png")
    with pytest.raises(PredictError, match=r"bomb.png declares more than 178,956,970 pixels, over the limit of 67"):
        load_images([tmp_path / "bomb.png"], SHAPE)
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(PredictError, match=r"fifo.png is a FIFO, not a regular file"):
        load_images([tmp_path / "fifo.png"], SHAPE)


def test_failed_parity_leaves_nothing_behind(student_dir, tmp_path, monkeypatch):
    original = runtime.onnx_logits
    monkeypatch.setattr(runtime, "onnx_logits", lambda *args, **kwargs: original(*args, **kwargs) + 1e-3)
    out = tmp_path / "exported"
    with pytest.raises(ParityError, match=r"max \|diff\| 0\.001.*tolerance 0\.0001") as failure:
        export_student(student_dir, out, "onnx")
    assert failure.value.results and not failure.value.results[0].passed
    assert list(tmp_path.iterdir()) == []
    # An existing export that --force would replace survives a failed one.
    previous = _fake_export(out)
    with pytest.raises(ParityError):
        export_student(student_dir, out, "onnx", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["exported"] and _tree(out) == previous
    with pytest.raises(ExportError, match="not empty.*--force"):
        export_student(student_dir, out, "onnx")


def _fake_export(out: Path) -> dict[str, bytes]:
    """A folder that looks like a previous export: its metadata and the artefact it lists."""
    out.mkdir(parents=True)
    (out / "model.onnx").write_bytes(b"old onnx")
    metadata = {"format": "mfef-export/1", "artifacts": {"onnx": {"path": "model.onnx"}}}
    (out / "metadata.json").write_text(json.dumps(metadata))
    return _tree(out)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content, to show that nothing changed."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def run_in_workdir(student_dir, tmp_path):
    """work/run (a run directory) beside work/notes.txt, an unrelated file."""
    run = tmp_path / "work" / "run"
    for name in ("students/s0", "best_student"):
        shutil.copytree(student_dir, run / name)
    (run / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    (tmp_path / "work" / "notes.txt").write_text("unrelated")
    return run


@pytest.mark.parametrize(
    "out, cwd, message",
    [
        ("{run}", None, "overlaps the source"),
        ("{run}/exports/onnx", None, "overlaps the source"),
        ("{work}", None, "overlaps the source"),
        (".", "{work}", "is or contains the current directory"),
        ("..", "{run}/best_student", "is or contains the current directory"),
        ("{home}", None, "is or contains your home"),
        ("/", None, "is the filesystem root"),
    ],
)
def test_export_out_overlapping_the_source_cwd_or_home_is_refused(
    run_in_workdir, tmp_path, monkeypatch, out, cwd, message
):
    run, work = run_in_workdir, run_in_workdir.parent
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    values = {"run": run, "work": work, "home": home}
    if cwd:
        monkeypatch.chdir(cwd.format(**values))
    before = _tree(tmp_path)
    result, output = _invoke(export_command, [run, "--out", out.format(**values), "--force"])
    assert result.exit_code != 0 and message in output, output
    assert "--out must be a new or empty directory, or a previous export to replace with --force" in output
    assert "Traceback" not in output and _tree(tmp_path) == before
    assert not (run / "exports").exists()


def test_force_replaces_only_a_previous_export(student_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("not an export")
    with pytest.raises(ExportError, match=f"--out {other} is not a previous export.*never another folder"):
        export_student(student_dir, other, "onnx", overwrite=True)
    padded = tmp_path / "padded"
    _fake_export(padded)
    (padded / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="also holds notes.txt, which its metadata does not list"):
        export_student(student_dir, padded, "onnx", overwrite=True)
    assert (other / "keep.txt").read_text() == "not an export" and (padded / "notes.txt").read_text() == "mine"

    previous = tmp_path / "previous"
    _fake_export(previous)
    report = export_student(student_dir, previous, "onnx", overwrite=True)
    assert sorted(p.name for p in previous.iterdir()) == ["metadata.json", "model.onnx"]
    assert (previous / "model.onnx").read_bytes() != b"old onnx" and report.metadata["source"] == str(student_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "padded", "previous"]


def test_no_preprocess_export_takes_normalised_floats(student_dir, student, tmp_path):
    report = export_student(student_dir, tmp_path / "bare", "onnx", preprocess=False)
    model = onnx.load(report.artifacts["onnx"])
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert report.metadata["input"]["preprocess"] is False and report.metadata["input"]["dtype"] == "float32"
    raw = np.random.default_rng(3).integers(0, 256, (5, *SHAPE), dtype=np.uint8)
    predictor = Predictor(report.artifacts["onnx"])
    # Raw uint8 images are normalised by the Predictor from the recorded mean/std; floats go in as they are.
    np.testing.assert_allclose(predictor.logits(raw), _keras_logits(student, raw), atol=1e-4)
    np.testing.assert_allclose(predictor.logits(normalize(raw, (0.5,), (0.3,))), predictor.logits(raw), atol=1e-6)


def test_fp16_keeps_interfaces_and_is_measured(student_dir, tmp_path, data):
    report = export_student(student_dir, tmp_path / "half", "onnx", quantize="fp16", validation_data=data["test"])
    model = onnx.load(report.artifacts["onnx_fp16"])
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    fp16 = [r for r in report.parity if r.artifact == "onnx_fp16"]
    assert len(fp16) == 2 and all(r.tolerance is None and r.passed for r in fp16)
    # Random noise images sit near decision boundaries; agreement is asserted on real ones.
    assert fp16[1].data.startswith("the given validation data") and fp16[1].top1_agreement >= 0.95
    assert abs(report.quantization["accuracy_change"]) <= 0.02
    assert report.quantization["bytes"] < report.quantization["bytes_fp32"]


def test_validate_on_and_int8_calibration_use_the_dataset_registry(student, tmp_path, monkeypatch, data):
    import mfef_keras.data

    calls = []

    def load_arrays(name, split, data_dir=None, limit=None):
        calls.append((name, split))
        return data[split]

    monkeypatch.setattr(mfef_keras.data, "load_arrays", load_arrays, raising=False)
    monkeypatch.setattr(mfef_keras.data, "dataset_info", lambda name, data_dir=None: toy_info(name), raising=False)
    save_student_dir(tmp_path / "student", student, StudentCard(toy_info()))
    report = export_student(tmp_path / "student", tmp_path / "q", "onnx", quantize="int8", calibration_samples=64)
    # The int8 accuracy change is measured on the student's own test split even without --validate-on.
    assert calls == [("toy-waves", "test"), ("toy-waves", "train")]
    assert report.quantization["calibration"] == "64 images sampled from the toy-waves train split"
    assert report.validation_data == "toy-waves test split (200 images)"
    assert set(report.accuracy) == {"keras", "onnx", "onnx_int8"}
    calls.clear()
    report = export_student(tmp_path / "student", tmp_path / "v", "onnx", validate_on="toy-waves")
    assert calls == [("toy-waves", "test")] and report.accuracy["onnx"] == report.accuracy["keras"]


def test_validate_on_a_registered_dataset(student, tmp_path):
    # The real registry: digits has the toy student's input shape and class count, but not its class names.
    save_student_dir(tmp_path / "waves", student, StudentCard(toy_info("digits")))
    with pytest.raises(ExportError, match=r"'digits' has other classes .* label 0: '0' vs 'wave0'"):
        export_student(tmp_path / "waves", tmp_path / "out", "onnx", validate_on="digits")
    digits = DatasetInfo(**{**toy_info("digits").to_dict(), "class_names": tuple(str(i) for i in range(10))})
    save_student_dir(tmp_path / "student", student, StudentCard(digits))
    report = export_student(tmp_path / "student", tmp_path / "out", "onnx", validate_on="digits")
    assert report.validation_data == "digits test split (360 images)"
    assert report.accuracy["onnx"] == report.accuracy["keras"]


def test_run_directory_student_index(student_dir, tmp_path):
    run = tmp_path / "run"
    for name in ("students/s0", "students/s1", "best_student"):
        shutil.copytree(student_dir, run / name)
    report = export_student(run, tmp_path / "s1", "onnx", student=1)
    assert report.metadata["source"] == f"{run} (students/s1)"
    assert export_student(run, tmp_path / "best", "onnx").metadata["source"] == f"{run} (best_student)"
    with pytest.raises(ExportError, match="has no student 5; it has s0, s1"):
        export_student(run, tmp_path / "bad", "onnx", student=5)
    with pytest.raises(ExportError, match="--student applies to run directories"):
        export_student(student_dir, tmp_path / "bad", "onnx", student=0)


def test_bad_sources(student_dir, tmp_path):
    with pytest.raises(ExportError, match="'no-such-model' is not an existing path.*SOURCE must be a run directory"):
        export_student("no-such-model", tmp_path / "out", "onnx")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(ExportError, match=r"'.*weights.h5' is a file but not a \.keras model nor a usable zoo preset"):
        export_student(tmp_path / "weights.h5", tmp_path / "out", "onnx")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(student_dir, corrupt)
    (corrupt / "model.keras").write_bytes(b"garbage")
    with pytest.raises(ExportError, match="Cannot load the student model .*model.keras"):
        export_student(corrupt, tmp_path / "out", "onnx")
    with pytest.raises(ExportError, match=r"has images of shape \(28, 28, 1\); the model takes \(32, 32, 1\)"):
        export_student(student_dir, tmp_path / "out", "onnx", validation_data=(np.zeros((4, 28, 28, 1)), np.zeros(4)))
    with pytest.raises(ExportError, match="Unknown export format"):
        export_student(student_dir, tmp_path / "out", "tflite")
    assert not (tmp_path / "out").exists()


def test_bare_keras_file(student, student_dir, tmp_path):
    shutil.copy(student_dir / "model.keras", tmp_path / "with_metadata.keras")
    shutil.copy(student_dir / "metadata.json", tmp_path / "metadata.json")
    report = export_student(tmp_path / "with_metadata.keras", tmp_path / "a", "onnx")
    assert report.metadata["class_names"] == list(CLASSES) and report.metadata["input"]["dtype"] == "uint8"
    alone = tmp_path / "alone"
    alone.mkdir()
    student.save(alone / "student.keras")
    with pytest.raises(ExportError, match="no metadata.json.*--no-preprocess"):
        export_student(alone / "student.keras", tmp_path / "b", "onnx")
    with pytest.raises(ExportError, match="no metadata with its normalisation, so it cannot be validated"):
        export_student(alone / "student.keras", tmp_path / "b", "onnx", preprocess=False, validate_on="digits")
    report = export_student(alone / "student.keras", tmp_path / "b", "onnx", preprocess=False)
    assert report.metadata["class_names"] == [str(i) for i in range(10)] and report.metadata["normalization"] is None
    assert all(r.passed for r in report.parity)


def test_opset_checks(student_dir, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match=r"Opset 25 is not supported: tf2onnx .* up to opset 18.*13\.\.18"):
        export_student(student_dir, tmp_path / "out", "onnx", opset=25)
    with pytest.raises(ExportError, match=r"Opset 9 is not supported"):
        export_student(student_dir, tmp_path / "out", "onnx", opset=9)
    monkeypatch.setattr(onnx_export, "ort_runs_opset", lambda opset: opset <= 15)
    with pytest.raises(ExportError, match=r"onnxruntime .* cannot run it; choose an opset in 13\.\.15"):
        export_student(student_dir, tmp_path / "out", "onnx", opset=17)
    assert onnx_export.tf2onnx_max_opset() >= 17


def test_ort_opset_probe():
    assert onnx_export.ort_runs_opset(17)
    assert not onnx_export.ort_runs_opset(99)


def test_opset_13_export_is_valid(student_dir, tmp_path):
    report = export_student(student_dir, tmp_path / "o13", "onnx", opset=13)
    assert onnx.load(report.artifacts["onnx"]).opset_import[0].version == 13
    assert all(r.passed for r in report.parity)


def _invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    return result, result.output


def test_export_and_predict_commands(student_dir, tmp_path, data):
    out = tmp_path / "cli"
    result, output = _invoke(export_command, [student_dir, "--out", out, "--format", "onnx"])
    assert result.exit_code == 0, output
    assert "onnx vs keras" in output and (out / "model.onnx").is_file()
    images = data["test"][0][:2]
    for i in range(2):
        Image.fromarray(images[i, :, :, 0]).save(tmp_path / f"img{i}.png")
    expected = Predictor(out).top_k(images, 3)
    result, output = _invoke(predict_command, [out, tmp_path / "img0.png", tmp_path / "img1.png", "--top-k", "3"])
    assert result.exit_code == 0, output
    assert "CPUExecutionProvider" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(tmp_path / "img0.png") and lines[4] == str(tmp_path / "img1.png")
    assert len(lines) == 8
    for rank, (line, (label, probability)) in enumerate(zip(lines[1:4], expected[0]), start=1):
        assert line.split() == [f"{rank}.", label, f"{probability:.4f}"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}", "--out", "{tmp}/o"], "not an existing path"),
        (["{student}", "--out", "{tmp}/o", "--opset", "99"], "Opset 99 is not supported"),
        (["{student}", "--out", "{tmp}/o", "--format", "tflite"], "Invalid value for '--format'"),
        (["{student}", "--out", "{tmp}/o", "--student", "1"], "--student applies to run directories"),
        (["{student}", "--out", "{tmp}/o", "--validate-on", "nope"], "Cannot read the classes of dataset 'nope'"),
    ],
)
def test_export_command_errors(student_dir, tmp_path, args, message):
    values = {"missing": tmp_path / "missing", "student": student_dir, "tmp": tmp_path}
    result, output = _invoke(export_command, [a.format(**values) for a in args])
    assert result.exit_code != 0 and message in output
    assert "Traceback" not in output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "o").exists()


def test_predict_command_errors(full_export, tmp_path):
    out, _ = full_export
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00garbage")
    png_bomb(tmp_path / "bomb.png")
    cases = [
        ([out, tmp_path / "small.png", "--no-resize"], "small.png is 28x28 (width x height); the model takes 32x32"),
        ([out, tmp_path / "bomb.png"], "bomb.png declares more than 178,956,970 pixels, over the limit of 67,108,864"),
        ([out, tmp_path / "rgb.png", "--no-resize"], "without --no-resize it is converted"),
        ([tmp_path / "corrupt.onnx", tmp_path / "rgb.png"], "Cannot load the ONNX model"),
        ([out, tmp_path / "nothing.png"], "does not exist"),
    ]
    for args, message in cases:
        result, output = _invoke(predict_command, args)
        assert result.exit_code != 0 and message in output, output
        assert "Traceback" not in output
    result, output = _invoke(predict_command, [out, tmp_path / "rgb.png", "--int8"])
    assert result.exit_code == 0 and "converted RGB to L" in result.stderr
    assert f"running {out / 'model.int8.onnx'}" in result.stderr


def test_eval_command_measures_an_onnx_model_on_the_test_split(student, tmp_path):
    from mfef_keras.cli import main

    digits = DatasetInfo(**{**toy_info("digits").to_dict(), "class_names": tuple(str(i) for i in range(10))})
    save_student_dir(tmp_path / "student", student, StudentCard(digits))
    report = export_student(tmp_path / "student", tmp_path / "export", "onnx", validate_on="digits")
    result, output = _invoke(main, ["eval", tmp_path / "export/model.onnx", "--out", tmp_path / "eval"])
    assert result.exit_code == 0, output
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    # The accuracy the export measured when it wrote the model, found again from the file alone.
    assert metrics["top1"] == report.accuracy["onnx"] and metrics["examples"] == 360
    assert f"digits test (360 images): top-1 {100 * metrics['top1']:.2f}%" in output
    assert (tmp_path / "eval/confusion_matrix.png").is_file() and np.sum(metrics["confusion_matrix"]) == 360


def test_eval_command_refuses_what_it_cannot_measure_on_an_onnx_model(full_export, tmp_path):
    from mfef_keras.cli import main

    out, _ = full_export
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00garbage")
    cases = [
        ([out / "model.onnx"], "Cannot read the classes of dataset 'toy-waves'"),
        ([out / "model.int8.onnx", "--dataset", "digits"], "'digits' has other classes than the student"),
        ([out, "--student", "1"], "Invalid value for --student: applies to run directories"),
        ([tmp_path / "corrupt.onnx", "--dataset", "digits"], "Cannot load the ONNX model"),
    ]
    for args, message in cases:
        result, output = _invoke(main, ["eval", *args, "--out", tmp_path / "eval"])
        assert result.exit_code != 0 and message in output, output
        assert "Traceback" not in output
    assert not (tmp_path / "eval").exists()


def test_inference_path_imports_no_tensorflow(tmp_path):
    code = (
        "import sys; import mfef_keras.export.predict_main, mfef_keras.export.predictor, mfef_keras.export.images; "
        "from mfef_keras.export import Predictor; "
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.slow
def test_predict_runs_in_a_venv_with_only_onnxruntime_numpy_pillow_click(full_export, tmp_path, data):
    """Mirrors the Dockerfile's inference stage: the wheel without its dependencies plus the four packages."""
    out, _ = full_export
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT], check=True, capture_output=True
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "onnxruntime<1.27", "numpy", "pillow", "click"], check=True, capture_output=True)
    subprocess.run([*pip, "--no-deps", *wheels.glob("mfef_keras-*.whl")], check=True, capture_output=True)
    missing = subprocess.run([python, "-c", "import tensorflow"], capture_output=True)
    assert missing.returncode != 0
    image = data["test"][0][:1]
    Image.fromarray(image[0, :, :, 0]).save(tmp_path / "img.png")
    expected = Predictor(out).top_k(image, 2)[0]
    result = subprocess.run(
        [python, "-m", "mfef_keras.export.predict_main", out, tmp_path / "img.png", "--top-k", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()[1:]] == [label for label, _ in expected]


def test_parity_lines_count_the_batches_of_a_test_split_instead_of_listing_them():
    from mfef_keras.export.parity import describe_batches

    assert describe_batches([1, 2, 7]) == "batches [1, 2, 7]"
    assert describe_batches([256] * 39 + [16]) == "39 batches of 256 and 1 of 16"
    assert describe_batches([100] * 100) == "100 batches of 100"
    assert describe_batches([1, 2, 7, 3, 5]) == "5 batches of 1 to 7"
