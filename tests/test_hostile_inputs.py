"""Inputs that lie or sit where they should not: ONNX metadata that disagrees with its graph, a FIFO given to
``mfef predict``, a ``--data-dir`` that is a file or lacks the dataset, a run still training. Each gives a result
or one ``Error:`` line, as the user runs the command."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from mfef_keras.data import dataset_info
from mfef_keras.export import export_student
from mfef_keras.models import get_backbone
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import save_student_dir
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.run_directory import write_config
from mfef_keras.training.run_lock import run_directory_lock
from tests.helpers import one_error_line, run_mfef

TRAIN = ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--base-width", "4", "--no-progress"]


def _student(path: Path, epoch: int = 1, epochs: int = 3) -> Path:
    """An untrained tiny digits student: what is refused or chosen does not depend on its accuracy."""
    model = get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4)
    metadata = StudentCard(dataset_info("digits"), epoch=epoch, config={"epochs": epochs})
    return save_student_dir(path, model, metadata)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    export_student(_student(tmp_path_factory.mktemp("student") / "s"), out, "onnx")
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "digit.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    return path


def _lying_export(exported: Path, to: Path, **changes) -> Path:
    """A copy of ``exported`` whose mfef.input metadata says ``changes`` (dtype, shape) of a graph that has not."""
    shutil.copytree(exported, to)
    model = onnx.load(to / "model.onnx")
    for prop in model.metadata_props:
        if prop.key == "mfef.input":
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    onnx.save(model, to / "model.onnx")
    return to


@pytest.mark.parametrize(
    "changes, claim",
    [
        ({"dtype": "float32", "preprocess": False}, "float32 [N, 32, 32, 1]"),
        ({"shape": [None, 28, 28, 1]}, "uint8 [N, 28, 28, 1]"),
        ({"shape": [None, 32, 32, 3]}, "uint8 [N, 32, 32, 3]"),
    ],
)
def test_predict_and_eval_refuse_metadata_that_lies_about_the_graph_input(exported, image, tmp_path, changes, claim):
    export = _lying_export(exported, tmp_path / "lying", **changes)
    graph = "graph's input 'images' is uint8 [batch, 32, 32, 1]"
    one_error_line(run_mfef("predict", export, image), f"says it takes {claim} images", graph, "re-export")
    one_error_line(run_mfef("eval", export, "--out", tmp_path / "eval"), f"says it takes {claim} images", graph)
    assert not (tmp_path / "eval").exists()


def test_predict_on_a_fifo_npy_returns_withone_error_line(exported, tmp_path):
    fifo = tmp_path / "batch.npy"
    os.mkfifo(fifo)
    one_error_line(run_mfef("predict", exported, fifo), str(fifo), "is a FIFO, not a regular file")


# About 15 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    for command in (["train", *TRAIN, "--run-dir", tmp_path / "run"], ["eval", _student(tmp_path / "s")]):
        result = run_mfef(*command, "--dataset", "fashion_mnist", "--data-dir", tmp_path / "data")
        one_error_line(result, f"Data directory {tmp_path / 'data'} is a file", "--data-dir")
    assert not (tmp_path / "run").exists()


# About 14 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_a_named_data_dir_without_the_dataset_is_refused_not_replaced_by_another_copy(tmp_path):
    (tmp_path / "data").mkdir()
    result = run_mfef("train", *TRAIN, "--dataset", "fashion_mnist", "--data-dir", tmp_path / "data", "--run-dir", "r")
    one_error_line(
        result,
        f"not in the data directory given, {tmp_path / 'data'}",
        f"{tmp_path / 'data' / 'fashion-mnist'} lacks train-images-idx3-ubyte.gz",
    )
    result = run_mfef("eval", _student(tmp_path / "s"), "--dataset", "fashion_mnist", "--data-dir", tmp_path / "none")
    one_error_line(result, f"Data directory {tmp_path / 'none'} does not exist")


def _run_in_progress(run: Path, with_best_student: bool) -> Path:
    """A run directory as a trainer leaves it between epochs: config, and best_student/ after an epoch."""
    run.mkdir()
    write_config(run, TrainConfig(epochs=3, base_width=4))
    if with_best_student:
        _student(run / "best_student", epoch=1, epochs=3)
    return run


# About 17 s of child processes: slow, run by .ci/run step 3.
@pytest.mark.slow
def test_eval_of_a_run_still_training_evaluates_its_best_student_so_far(tmp_path):
    run = _run_in_progress(tmp_path / "run", with_best_student=True)
    with run_directory_lock(run):
        result = run_mfef("eval", run)
        assert result.returncode == 0, result.stderr
        assert f"note: run {run} is still training (PID {os.getpid()} on " in result.stderr
        assert "evaluating its best student so far, saved after epoch 1 of 3" in result.stderr
        assert json.loads((run / "eval" / "metrics.json").read_text())["source"] == str(run)
        one_error_line(run_mfef("eval", run, "--student", "0"), "is still training", "leave out --student")
    # Its trainer gone, the run is unfinished rather than training.
    result = run_mfef("eval", run, "--out", tmp_path / "again")
    assert result.returncode == 0 and f"run {run} is unfinished" in result.stderr, result.stderr


def test_eval_of_a_run_before_its_first_epoch_says_so(tmp_path):
    run = _run_in_progress(tmp_path / "run", with_best_student=False)
    with run_directory_lock(run):
        one_error_line(run_mfef("eval", run), f"Run {run} is still training", "has completed no epoch yet")
