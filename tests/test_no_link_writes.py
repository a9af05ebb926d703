"""No file is written through a symbolic link, and a lock path that is not a regular file is refused in one line."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mfef_keras._outputs import check_output_dir
from mfef_keras._regular_files import NotARegularFile
from mfef_keras.atomic_files import write_bytes_atomic, write_json_atomic
from mfef_keras.data import dataset_info
from mfef_keras.models import get_backbone
from mfef_keras.student_card import StudentCard
from mfef_keras.student_dir import save_student_dir
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.plots import plot_training_curves
from mfef_keras.training.run_directory import LOCK_FILE, RunDirectoryError, check_run_dir, write_config
from mfef_keras.training.run_lock import run_directory_lock
from mfef_keras.training.study import run_study
from mfef_keras.zoo.cache import ENV_CACHE, cache_key, locked
from mfef_keras.zoo.cache import LOCK_FILE as ZOO_LOCK_FILE
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


# ---------------------------------------------------------------- a folder that is a link


def _untouched(outside: Path) -> None:
    """The folder a planted link points at holds its one file, byte-identical, and nothing mfef wrote."""
    assert sorted(p.name for p in outside.parent.iterdir()) == ["precious.txt"]
    assert outside.read_bytes() == PRECIOUS


def _no_study_training(config, echo=print):
    raise AssertionError(f"{config.run_dir} was trained through a link")


# Every folder the package writes in, as its guard gets it: a link there must be refused before any write.
FOLDER_WRITERS = {
    "output folder (eval, study)": lambda folder: check_output_dir(folder),
    "run directory": lambda folder: check_run_dir(folder, TrainConfig()),
    "zoo cache key": lambda folder: locked(folder).__enter__(),
    "study runs/": lambda folder: run_study(TrainConfig(), ["dml"], [0], folder.parent, train_fn=_no_study_training),
    "study run": lambda folder: run_study(
        TrainConfig(), ["dml"], [0], folder.parent.parent, train_fn=_no_study_training
    ),
}
# Where each writer's folder lies below tmp_path, so that the study's own layout holds the link.
FOLDER_PLACES = {"study runs/": "study/runs", "study run": "study/runs/dml-seed0"}


@pytest.mark.parametrize("writer", FOLDER_WRITERS)
def test_no_writer_follows_a_folder_that_links_outside(tmp_path, outside, writer):
    folder = tmp_path / FOLDER_PLACES.get(writer, "folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(ValueError) as refused:
        FOLDER_WRITERS[writer](folder)
    assert f"{folder} is a symbolic link (to {outside.parent})" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert folder.is_symlink()
    _untouched(outside)


def test_a_link_above_the_folder_the_user_named_is_the_users_own_choice(tmp_path):
    # A home or a disk mounted through a link must keep working; only what mfef lays out itself is checked.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    assert check_output_dir(tmp_path / "linked" / "out") == tmp_path / "linked" / "out"
    assert check_run_dir(tmp_path / "linked" / "run", TrainConfig()) is False


@pytest.fixture
def student_dir(tmp_path) -> Path:
    """An untrained tiny digits student: the refusals come before its accuracy matters."""
    model = get_backbone("resnet8", 10, input_shape=(32, 32, 1), base_width=4)
    metadata = StudentCard(dataset_info("digits"))
    return save_student_dir(tmp_path / "student", model, metadata)


@pytest.mark.parametrize("given", ["default", "--out"])
def test_eval_refuses_an_output_folder_that_links_outside(tmp_path, outside, student_dir, given):
    folder = student_dir / "eval" if given == "default" else tmp_path / "results"
    folder.symlink_to(outside.parent, target_is_directory=True)
    out = ["--out", folder] if given == "--out" else []
    result = run_mfef("eval", student_dir, *out, "--batch-size", "512")
    one_error_line(result, f"--out {folder} is a symbolic link (to {outside.parent})")
    _untouched(outside)


def test_train_refuses_a_run_directory_that_links_outside(tmp_path):
    # An empty folder there: one holding files is refused anyway, as no run directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    run.symlink_to(elsewhere, target_is_directory=True)
    result = run_mfef("train", *TRAIN, "--run-dir", run)
    one_error_line(result, f"Run directory {run} is a symbolic link (to {elsewhere})", "another --run-dir")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("linked", ["runs", "runs/dml-seed0"])
def test_study_refuses_a_runs_folder_or_run_that_links_outside(tmp_path, outside, linked):
    study = tmp_path / "study"
    (study / linked).parent.mkdir(parents=True)
    (study / linked).symlink_to(outside.parent, target_is_directory=True)
    result = run_mfef("study", *TRAIN, "--methods", "dml", "--seeds", "1", "--out", study)
    one_error_line(result, f"{study / linked} is a symbolic link (to {outside.parent})", "another --out")
    _untouched(outside)


def test_zoo_pull_refuses_a_cache_folder_that_links_outside(tmp_path, outside, monkeypatch):
    # A leftover-looking file there: the pull would delete it as its own if it went through the link.
    planted = outside.parent / ".part-x"
    planted.write_bytes(b"not mfef's")
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "resnet8_mfef.digits_s0"
    (cache / cache_key(name)).symlink_to(outside.parent, target_is_directory=True)
    monkeypatch.setenv(ENV_CACHE, str(cache))
    result = run_mfef("zoo", "pull", name)
    one_error_line(result, f"{cache / cache_key(name)} is a symbolic link (to {outside.parent})", "Remove the link")
    planted.unlink()
    _untouched(outside)
