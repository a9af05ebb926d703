"""Bad inputs to eval, study, export, predict, config and the zoo: one ``Error:`` line, no traceback, no output."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from mfef_keras.data import dataset_info
from mfef_keras.export import ExportError, PredictError, Predictor, export_student
from mfef_keras.export.npy_files import check_npy_sizes
from mfef_keras.models import get_backbone
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import save_student_dir
from tests.helpers import subprocess_env

TRAIN = ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--base-width", "4", "--no-progress"]


def _mfef(*args, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mfef_keras.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(**env), timeout=300)


def _refused(result, *fragments: str) -> str:
    """The one ``Error:`` line of a refused command, after checking it names every fragment."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """An untrained tiny digits student: refusals happen before its accuracy matters."""
    model = get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4)
    metadata = StudentCard(dataset_info("digits"))
    return save_student_dir(tmp_path_factory.mktemp("student") / "s", model, metadata)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, student_dir) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    export_student(student_dir, out, "onnx")
    return out


def _copy_export(exported: Path, to: Path) -> Path:
    shutil.copytree(exported, to)
    return to


def test_config_directory_is_refused(tmp_path):
    (tmp_path / "configs").mkdir()
    result = _mfef("train", "--config", tmp_path / "configs", *TRAIN, "--run-dir", tmp_path / "run")
    _refused(result, f"Config file '{tmp_path / 'configs'}' is a directory", "paper-cifar100-resnet32")
    assert not (tmp_path / "run").exists()


def test_eval_and_study_refuse_a_file_as_output_folder(student_dir, tmp_path):
    (tmp_path / "file").write_text("keep me")
    for command in (["eval", student_dir], ["study", *TRAIN, "--methods", "dml", "--seeds", "1"]):
        result = _mfef(*command, "--out", tmp_path / "file")
        _refused(result, f"--out {tmp_path / 'file'} is not a directory", "must be a new or existing directory")
    assert (tmp_path / "file").read_text() == "keep me"


def test_study_without_methods_lists_the_methods(tmp_path):
    result = _mfef("study", *TRAIN, "--methods", ",", "--seeds", "1", "--out", tmp_path / "study")
    _refused(result, "No method to study", "independent, dml, ffl, kdcl-minlogit, kdcl-naive, mfef")
    assert not (tmp_path / "study").exists()


def test_a_manifest_that_is_a_directory_is_named(tmp_path):
    result = _mfef("zoo", "list", MFEF_ZOO_MANIFEST=str(tmp_path), MFEF_ZOO_CACHE=str(tmp_path / "cache"))
    _refused(result, f"Manifest {tmp_path} is a directory", str(tmp_path / "manifest.json"))


def _npy_with_header(path: Path, shape: tuple[int, ...], payload: int = 1024) -> Path:
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
        handle.write(bytes(payload))
    return path


def test_predict_refuses_a_npy_whose_header_claims_95_gib(exported, tmp_path):
    bomb = _npy_with_header(tmp_path / "bomb.npy", (95 << 20, 32, 32, 1))
    _refused(_mfef("predict", exported, bomb), str(bomb), "(99614720, 32, 32, 1) uint8: 95.0 GiB", "at most 4.0 GiB")


def test_npy_headers_are_checked_alone_together_and_against_the_file(tmp_path):
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((4, 8, 8, 1), np.uint8))
    check_npy_sizes([small, tmp_path / "image.png"], limit=256)
    with pytest.raises(PredictError, match=r"small.npy declares .* \(0.0 GiB with the .npy files before it\)"):
        check_npy_sizes([small, small], limit=300)
    truncated = _npy_with_header(tmp_path / "truncated.npy", (100, 8, 8, 1), payload=64)
    with pytest.raises(PredictError, match=r"truncated.npy is truncated .* \(6,400 bytes\) but the file holds 64"):
        check_npy_sizes([truncated])
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(PredictError, match="Cannot read .*text.npy as a .npy array"):
        check_npy_sizes([tmp_path / "text.npy"])


def test_predict_runs_the_float32_model_and_fits_images_to_it_unless_told_not_to(exported, tmp_path):
    export = _copy_export(exported, tmp_path / "export")
    # An edited default_onnx is not followed: the folder's model.onnx runs, and stderr says so.
    shutil.copy(exported / "model.onnx", tmp_path / "elsewhere.onnx")
    metadata = json.loads((export / "metadata.json").read_text())
    (export / "metadata.json").write_text(json.dumps({**metadata, "default_onnx": "../elsewhere.onnx"}))
    Image.fromarray(np.full((28, 40, 3), 200, np.uint8)).save(tmp_path / "photo.png")
    result = _mfef("predict", export, tmp_path / "photo.png", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    assert f"running {export / 'model.onnx'} on CPUExecutionProvider" in result.stderr
    assert f"note: {tmp_path / 'photo.png'}: converted RGB to L (3 -> 1 channels), resized 40x28 to 32x32" in (
        result.stderr
    )
    assert result.stdout.splitlines()[0] == str(tmp_path / "photo.png") and len(result.stdout.splitlines()) == 3

    _refused(
        _mfef("predict", export, tmp_path / "photo.png", "--no-resize"),
        "photo.png has 3 channel(s) (mode RGB); the model takes 1 (without --no-resize it is converted)",
    )
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "small.png")
    _refused(
        _mfef("predict", export, tmp_path / "small.png", "--no-resize"),
        "small.png is 28x28 (width x height); the model takes 32x32 (without --no-resize it is resized)",
    )
    _refused(_mfef("predict", export, tmp_path / "small.png", "--int8"), "holds no int8 model (model.int8.onnx)")


def _with_props(exported: Path, to: Path, **props: str) -> Path:
    export = _copy_export(exported, to)
    model = onnx.load(export / "model.onnx")
    for prop in model.metadata_props:
        if prop.key in props:
            prop.value = props[prop.key]
    onnx.save(model, export / "model.onnx")
    return export


def test_malformed_export_metadata_is_named(exported, tmp_path):
    cases = {
        "not-json": ({"mfef.class_names": "[not json"}, "metadata_props entry 'mfef.class_names' is not valid JSON"),
        "few-names": ({"mfef.class_names": '["a", "b"]'}, "lists 2 class names .* but the model has 10 outputs"),
        "bad-input": ({"mfef.input": '{"shape": 3}'}, r"malformed mfef_keras metadata: .*mfef.input=\{'shape': 3\}"),
    }
    for name, (props, message) in cases.items():
        export = _with_props(exported, tmp_path / name, **props)
        with pytest.raises(PredictError, match=f"{export / 'model.onnx'} .*{message}"):
            Predictor(export)
    # The folder's metadata.json does not choose the model (its name is fixed), so a broken one does not matter.
    export = _copy_export(exported, tmp_path / "broken")
    (export / "metadata.json").write_text("{not json")
    assert Predictor(export).path == export / "model.onnx"


def test_validate_on_a_dataset_of_other_classes_is_refused(student_dir, tmp_path):
    # cifar10's classes are known without its data; the refusal comes before anything is loaded.
    with pytest.raises(ExportError, match=r"'cifar10' has other classes .* label 0: 'airplane' vs '0'"):
        export_student(student_dir, tmp_path / "out", "onnx", validate_on="cifar10")
    assert not (tmp_path / "out").exists()


def _eval(student_dir, out) -> object:
    from mfef_keras.cli import main

    return CliRunner().invoke(main, ["eval", str(student_dir), "--out", str(out), "--batch-size", "512"])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_failures_in_eval_and_export_are_one_line_and_leave_nothing(student_dir, tmp_path, monkeypatch, code):
    import mfef_keras.export.exporter as exporter
    import mfef_keras.training.eval_results as eval_results

    def fail(*args, **kwargs):
        # The temporary file's name: the message must name the output the user gave instead.
        raise OSError(code, os.strerror(code), str(tmp_path / ".partial-x" / "file.tmp"))

    monkeypatch.setattr(eval_results, "plot_confusion_matrix", fail)
    result = _eval(student_dir, tmp_path / "eval")
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    assert f"Error: Cannot write {tmp_path / 'eval'}: " in result.stderr and errno.errorcode[code] in result.stderr
    assert not (tmp_path / "eval").exists()

    from mfef_keras.export.commands import export_command

    monkeypatch.setattr(exporter, "write_json_atomic", fail)
    result = CliRunner().invoke(export_command, [str(student_dir), "--out", str(tmp_path / "export")])
    assert result.exit_code == 1 and f"Error: Cannot write {tmp_path / 'export'}: " in result.stderr, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_eval_to_a_folder_it_cannot_write_is_one_line(student_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # Root writes through permissions; /sys refuses even root (EPERM).
    target = locked / "eval" if not os.access(locked, os.W_OK) else Path("/sys/mfef-eval-test")
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip("no folder here refuses writes")
    result = _eval(student_dir, target)
    locked.chmod(0o700)
    assert result.exit_code == 1 and f"Error: Cannot access {target}: " in result.stderr, result.output
    assert "Traceback" not in result.output and not target.exists()
