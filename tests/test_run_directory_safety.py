"""A run directory loses nothing: failed writes leave no temporary files, leftovers are swept, one trainer at a time."""

import errno
import json
import os
import socket
import tempfile

import keras
import pytest

import mfef_keras.student_dir as student_dir
from mfef_keras.atomic_files import write_bytes_atomic
from mfef_keras.data.info import DatasetInfo
from mfef_keras.student_card import StudentCard
from mfef_keras.training.config import TrainConfig
from mfef_keras.training.devices import configure_cpu_devices
from mfef_keras.training.run_directory import (
    CONFIG_FILE,
    DATA_FILE,
    LOCK_FILE,
    RunDirectoryError,
    check_data_fingerprint,
    check_run_dir,
    sweep_leftovers,
    write_config,
)
from mfef_keras.training.run_lock import RunDirectoryBusy, run_directory_lock


def _full_disk(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_write_that_fails_on_a_full_disk_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    _full_disk(monkeypatch)
    with pytest.raises(OSError) as failure:
        write_bytes_atomic(target, b"new" * 100_000)
    assert failure.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"] and target.read_text() == "old"


def test_a_student_save_that_fails_leaves_no_staging_folder(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    info = DatasetInfo("toy", 2, ("a", "b"), (1, 1, 2), (0.5, 0.5), (0.2, 0.2), {"train": 2, "test": 2})
    _full_disk(monkeypatch)
    with pytest.raises(OSError):
        student_dir.save_student_dir(tmp_path / "best_student", model, StudentCard(info))
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_the_atomic_writers_are_swept_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    (run / "students" / "s0").mkdir(parents=True)
    kept = [run / CONFIG_FILE, run / "notes.tmp", run / ".hidden", run / "students" / "s0" / "model.keras"]
    for path in kept:
        path.write_text("{}")
    (run / "best_student").mkdir()
    # Named as the helpers name them.
    leftovers = [
        tempfile.NamedTemporaryFile(dir=run, prefix=".checkpoint.npz.", suffix=".tmp", delete=False).name,
        tempfile.NamedTemporaryFile(dir=run, prefix=".metrics.csv.", suffix=".tmp", delete=False).name,
        tempfile.mkdtemp(dir=run, prefix=".best_student."),
        tempfile.mkdtemp(dir=run / "students", prefix=".s1."),
    ]
    (run / leftovers[2] / "model.keras").write_text("half")
    assert sorted(map(str, sweep_leftovers(run))) == sorted(leftovers)
    assert not any(map(os.path.exists, leftovers))
    assert all(path.exists() for path in kept) and (run / "best_student").is_dir()


def test_a_run_directory_holding_only_a_lock_and_leftovers_counts_as_a_run_directory(tmp_path):
    (tmp_path / LOCK_FILE).write_text("{}")
    tempfile.NamedTemporaryFile(dir=tmp_path, prefix=".config.json.", suffix=".tmp", delete=False).close()
    assert check_run_dir(tmp_path, TrainConfig()) is True
    (tmp_path / "photo.png").write_text("")
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        check_run_dir(tmp_path, TrainConfig())


@pytest.mark.parametrize("text, problem", [('{"experiment_hash": ', "is not valid JSON"), ("[1]", "holds a list")])
def test_a_damaged_config_or_data_file_is_named(tmp_path, text, problem):
    write_config(tmp_path, TrainConfig())
    (tmp_path / DATA_FILE).write_text(text)
    with pytest.raises(RunDirectoryError, match=f"{tmp_path / DATA_FILE} {problem}.*delete that directory"):
        check_data_fingerprint(tmp_path, {"splits": {}})
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(RunDirectoryError, match=f"{tmp_path / CONFIG_FILE} {problem}"):
        check_run_dir(tmp_path, TrainConfig())


def test_a_held_run_directory_is_refused_naming_the_holder(tmp_path):
    with run_directory_lock(tmp_path):
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        # flock locks belong to an open file, so a second open in this process is refused like another process.
        with pytest.raises(RunDirectoryBusy, match=f"in use by another trainer \\(PID {os.getpid()} on .*since "):
            with run_directory_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()
    with run_directory_lock(tmp_path):
        pass


def test_the_lock_of_a_killed_trainer_is_taken_over_with_a_note(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 4_000_000, "host": "gone", "since": "yesterday"}))
    notes = []
    with run_directory_lock(tmp_path, echo=notes.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert notes == [
        f"Taking over the lock of {tmp_path} from PID 4000000 on gone, since yesterday: that trainer stopped "
        "without releasing it."
    ]


def test_more_cpu_devices_than_cores_is_refused_naming_both():
    cores = os.cpu_count()
    with pytest.raises(ValueError, match=f"cpu_devices {cores + 1} .*more than the {cores} CPU cores"):
        configure_cpu_devices(cores + 1)
