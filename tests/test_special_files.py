"""Every reader of outside input refuses what is not a regular file (a FIFO, a directory) at once, never hanging."""

from __future__ import annotations

import os
import threading

import pytest

from mfef_keras.data.idx_files import read_gzip
from mfef_keras.data.image_files import load_image
from mfef_keras.export.images import load_images
from mfef_keras.export.npy_files import check_npy_sizes
from mfef_keras.export.runtime import make_session
from mfef_keras.file_hashing import sha256_file
from mfef_keras.student_dir import load_keras_file, read_card
from mfef_keras.training.checkpoint import _read as read_checkpoint
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.run_directory import check_run_dir
from mfef_keras.training.runner import _record_resume
from mfef_keras.training.study import _num_classes, _summary_of
from mfef_keras.zoo.preset import read_preset_index
from tests.helpers import one_error_line, run_mfef

# reader name -> (name of the file it reads, call on that file's folder and path).
READERS = {
    "IDX gzip": ("train-images-idx3-ubyte.gz", lambda folder, path: read_gzip(path)),
    "image": ("x.png", lambda folder, path: load_image(path)),
    ".npy header": ("x.npy", lambda folder, path: check_npy_sizes([path])),
    ".npy batch": ("x.npy", lambda folder, path: load_images([path], (8, 8, 1))),
    "file hash": ("model.onnx", lambda folder, path: sha256_file(path)),
    "ONNX model": ("model.onnx", lambda folder, path: make_session(path)),
    "Keras model": ("model.keras", lambda folder, path: load_keras_file(path)),
    "student metadata": ("metadata.json", lambda folder, path: read_card(folder)),
    "preset index": ("preset.json", lambda folder, path: read_preset_index(folder)),
    "run config": ("config.json", lambda folder, path: check_run_dir(folder, TrainConfig())),
    "checkpoint": ("checkpoint.npz", lambda folder, path: read_checkpoint(path)),
    "study run summary": ("summary.json", lambda folder, path: _summary_of(folder)),
    "study class count": ("data.json", lambda folder, path: _num_classes({"dml": {0: str(folder)}})),
    "resumed run's environment": ("environment.json", lambda folder, path: _record_resume(folder, 1, 0)),
}


def _outcome_within(seconds: float, call) -> BaseException:
    """The exception ``call`` raised, failing the test if it returned or did not return within ``seconds``."""
    outcome = []

    def run():
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    assert outcome[0] is not None, "a special file was read as if it were data"
    return outcome[0]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", ["FIFO", "directory"])
def test_every_reader_refuses_a_special_file_naming_it(tmp_path, reader, kind):
    name, call = READERS[reader]
    path = tmp_path / name
    os.mkfifo(path) if kind == "FIFO" else path.mkdir()
    error = _outcome_within(10, lambda: call(tmp_path, path))
    assert isinstance(error, ValueError), repr(error)
    assert f"{path} is a {kind}, not a regular file" in str(error)


def test_train_with_a_fifo_as_its_config_exits_withone_error_line(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    result = run_mfef("train", "--config", fifo, "--run-dir", tmp_path / "r")
    one_error_line(result, f"{fifo} is a FIFO, not a regular file; only a regular file can be read as a config")
    assert not (tmp_path / "r").exists()


def test_train_on_a_fashion_mnist_copy_with_a_fifo_exits_withone_error_line(tmp_path):
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"]
    for name in names:
        (folder / name).write_bytes(b"")
    os.mkfifo(folder / "t10k-labels-idx1-ubyte.gz")
    data = ["--dataset", "fashion_mnist", "--data-dir", tmp_path / "data"]
    result = run_mfef("train", *data, "--run-dir", tmp_path / "r")
    one_error_line(result, str(folder / "t10k-labels-idx1-ubyte.gz"), "not a regular file")
    assert not (tmp_path / "r").exists()
