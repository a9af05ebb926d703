"""No file is written through a symbolic link, and a lock path that is not a regular file is refused in one line."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mfef_keras._regular_files import NotARegularFile
from mfef_keras.student_dir import write_bytes_atomic, write_json_atomic
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.plots import plot_training_curves
from mfef_keras.training.run_directory import LOCK_FILE, RunDirectoryError, check_run_dir, write_config
from mfef_keras.training.run_lock import run_directory_lock
from mfef_keras.zoo.cache import LOCK_FILE as ZOO_LOCK_FILE
from mfef_keras.zoo.cache import locked
from tests.helpers import one_error_line, run_mfef

TRAIN = ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--base-width", "4", "--no-progress"]
PRECIOUS = b"the user's own file\n" * 50


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside every folder the package writes, that a planted link points at."""
    target = tmp_path / "outside" / "precious.txt"
    target.parent.mkdir()
    target.write_bytes(PRECIOUS)
    return target


def _history() -> list[dict]:
    return [{"epoch": 1, "loss": 1.0, "val_loss": 1.1, "val_acc_s0": 0.5, "test_acc_s0": 0.4}]


# Every way the package writes a file in a run, study, export or cache folder.
WRITERS = {
    "write_bytes_atomic": lambda path: write_bytes_atomic(path, b"new"),
    "write_json_atomic": lambda path: write_json_atomic(path, {"new": 1}),
    "plot (savefig)": lambda path: plot_training_curves(_history(), path),
    "run lock": lambda path: run_directory_lock(path.parent).__enter__(),
    "zoo cache lock": lambda path: locked(path.parent).__enter__(),
}
NAMES = {"run lock": LOCK_FILE, "zoo cache lock": ZOO_LOCK_FILE}


@pytest.mark.parametrize("writer", WRITERS)
def test_no_writer_follows_a_link_to_a_file_outside(tmp_path, outside, writer):
    folder = tmp_path / "run"
    folder.mkdir()
    link = folder / NAMES.get(writer, "file.out")
    link.symlink_to(outside)
    try:
        WRITERS[writer](link)
    except NotARegularFile as error:
        # In-place writers refuse the link, naming it and its target.
        assert str(link) in str(error) and str(outside) in str(error) and "symbolic link" in str(error)
    else:
        # The others write a new file and rename it over the link, which replaces the link itself.
        assert not link.is_symlink() and link.is_file()
    assert outside.read_bytes() == PRECIOUS
    assert sorted(p.name for p in outside.parent.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize("lock", [run_directory_lock, locked])
@pytest.mark.parametrize("kind", ["directory", "FIFO"])
def test_a_lock_path_that_is_no_regular_file_is_refused_without_blocking(tmp_path, lock, kind):
    name = LOCK_FILE if lock is run_directory_lock else ZOO_LOCK_FILE
    path = tmp_path / name
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    outcome = []

    def take():
        try:
            with lock(tmp_path):
                outcome.append("taken")
        except NotARegularFile as error:
            outcome.append(str(error))

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert outcome, f"taking a lock on a {kind} hung"
    assert outcome[0].startswith(f"{path} is a {kind}") and "regular file" in outcome[0]


def test_a_link_anywhere_in_a_run_directory_is_refused_before_training(tmp_path, outside):
    config = TrainConfig()
    write_config(tmp_path, config)
    (tmp_path / "students").mkdir()
    (tmp_path / "students" / "s0").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(RunDirectoryError, match=f"holds a symbolic link, {tmp_path / 'students' / 's0'} \\(to "):
        check_run_dir(tmp_path, config)


def test_train_refuses_a_lock_that_links_outside_and_leaves_its_target_byte_identical(tmp_path, outside):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).symlink_to(outside)
    one_error_line(
        run_mfef("train", *TRAIN, "--run-dir", run), str(run / LOCK_FILE), "symbolic link", "Remove the link"
    )
    assert outside.read_bytes() == PRECIOUS
    assert (run / LOCK_FILE).is_symlink()


def test_train_with_a_directory_as_its_lock_says_so_in_one_line(tmp_path):
    run = tmp_path / "run"
    (run / LOCK_FILE).mkdir(parents=True)
    one_error_line(
        run_mfef("train", *TRAIN, "--run-dir", run), f"{run / LOCK_FILE} is a directory", "Remove or rename it"
    )


def test_export_refuses_an_out_that_is_a_link_before_any_work(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "out").symlink_to(target, target_is_directory=True)
    result = run_mfef("export", tmp_path / "no-student", "--out", tmp_path / "out")
    one_error_line(result, f"--out {tmp_path / 'out'} is a symbolic link (to {target})")
    assert list(target.iterdir()) == [] and (tmp_path / "out").is_symlink()
