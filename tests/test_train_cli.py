"""End-to-end training runs through the `mfef` CLI: run directories, interruption, NaN, devices, bad input.

Resuming, the lock and damaged run files are in tests/test_resume_cli.py."""

import csv
import errno
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mfef_keras.cli import main
from tests.helpers import epoch_rows, subprocess_env

TINY = ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress"]


def _run(args, **kwargs):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


def test_train_writes_a_complete_run_directory_and_eval_reproduces_it(tmp_path):
    run = tmp_path / "run"
    result = _run(["train", "--epochs", "2", "--run-dir", str(run), *TINY])
    assert result.exit_code == 0, result.output
    assert "best student:" in result.output and "epoch 2/2" in result.output
    for name in ("config.json", "environment.json", "metrics.csv", "metrics.json", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    rows = epoch_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "ce_s0", "ce_fused", "kd_s1", "kd_fused", "acc_ensemble", "val_acc_s0", "val_acc_fused", "lr"):
        assert all(math.isfinite(r[key]) for r in rows), key
    for key in ("val_loss", "test_loss", "test_acc_s0", "test_acc_fused"):
        assert all(math.isfinite(r[key]) for r in rows), key
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "lr", "time_s"] and {"val_acc_ensemble", "test_acc_ensemble"} <= set(header)
    environment = json.loads((run / "environment.json").read_text())
    assert environment["seed"] == 0 and "keras" in environment["packages"]
    assert json.loads((run / "config.json").read_text())["config"]["train_limit"] == 128
    # digits: 10 % of the 1,437 training images held out, the limit taken from the remaining 1,293
    data = json.loads((run / "data.json").read_text())
    assert data["splits"] == {"train": 1293, "val": 144, "test": 360} and data["train_examples"] == 128
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"selection", "selection_label", "cohort", "s0", "s1", "fused", "ensemble", "best_student"}
    assert summary["selection"] == "validation"
    best = summary["best_student"]
    by_epoch = {row["epoch"]: row for row in rows}
    # chosen on the validation split, reported on the test split at that epoch and at the last
    for model in ("s0", "s1", "fused", "ensemble"):
        chosen = max(rows, key=lambda row: (row[f"val_acc_{model}"], row["epoch"]))
        assert summary[model]["best_epoch"] == chosen["epoch"]
        assert summary[model]["test_at_best"] == chosen[f"test_acc_{model}"]
        assert summary[model]["test_last"] == rows[-1][f"test_acc_{model}"]
    metadata = json.loads((run / "best_student" / "metadata.json").read_text())
    assert metadata["selection"] == "validation" and metadata["epoch"] == best["best_epoch"]
    assert metadata["test_accuracy"] == by_epoch[best["best_epoch"]][f"test_acc_{best['name']}"]
    assert metadata["validation_accuracy"] == best["best_val"]
    assert (run / "best_student" / "model.keras").is_file() and (run / "students" / "s1" / "model.keras").is_file()

    evaluated = _run(["eval", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "best_student" / "eval" / "metrics.json").read_text())
    # the saved best student reproduces, on the same test split, the accuracy the run recorded
    assert metrics["top1"] == pytest.approx(summary["best_student"]["test_at_best"], abs=1e-6)
    assert metrics["top5"] >= metrics["top1"]
    assert np.asarray(metrics["confusion_matrix"]).sum() == metrics["examples"]
    assert (run / "best_student" / "eval" / "confusion_matrix.png").stat().st_size > 1000

    again = _run(["train", "--epochs", "2", "--run-dir", str(run), *TINY])
    assert again.exit_code == 0 and "epoch 1/2" not in again.output and "best student:" in again.output


# About 23 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes; the killed-run
# resume (test_resume_cli) stays.
@pytest.mark.slow
def test_interrupted_run_continues_like_an_uninterrupted_one(tmp_path):
    from mfef_keras.training.config import TrainConfig
    from mfef_keras.training.runner import train

    base = dict(epochs=2, base_width=4, train_limit=128, batch_size=64, progress=False)
    straight = train(TrainConfig(run_dir=str(tmp_path / "a"), **base), echo=lambda _: None)

    def stop_after_first_epoch(line):
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(run_dir=str(tmp_path / "b"), **base), echo=stop_after_first_epoch)
    assert len(epoch_rows(tmp_path / "b")) == 1
    # As if killed after the checkpoint and before the validation events of epoch 1 were written.
    shutil.rmtree(tmp_path / "b" / "tensorboard" / "validation")
    resumed = train(TrainConfig(run_dir=str(tmp_path / "b"), **base), echo=lambda _: None)
    for key in ("loss", "val_loss", "test_loss", "kd_weight", "lr"):
        assert resumed.history[-1][key] == pytest.approx(straight.history[-1][key], rel=2e-3), key
    # The resumed run continues the curves: every step once, the missing one written again.
    for split in ("train", "validation", "test"):
        steps = _tensorboard_scalars(tmp_path / "b" / "tensorboard" / split)["loss"]
        assert [step for step, _ in steps] == [1, 2], split
    assert _tensorboard_scalars(tmp_path / "b" / "tensorboard" / "validation")["loss"][1][1] == pytest.approx(
        resumed.history[-1]["val_loss"]
    )


def _tensorboard_scalars(folder):
    """``{tag: [(step, value), ...]}`` read back from the event files in ``folder``."""
    import tensorflow as tf

    scalars = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars", value.tag
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


# About 9 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_selection_on_test_is_the_papers_protocol_picked_by_test_accuracy_and_labelled(tmp_path):
    run = tmp_path / "run"
    result = _run(["train", "--epochs", "2", "--run-dir", str(run), "--selection", "test", *TINY])
    assert result.exit_code == 0, result.output
    assert "selected on the test split (papers' protocol)" in result.output
    rows = epoch_rows(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selection"] == "test"
    assert summary["selection_label"] == "selected on the test split (papers' protocol)"
    for model in ("s0", "s1", "fused", "ensemble"):
        chosen = max(rows, key=lambda row: (row[f"test_acc_{model}"], row["epoch"]))
        assert summary[model]["best_epoch"] == chosen["epoch"]
        assert summary[model]["test_at_best"] == chosen[f"test_acc_{model}"]
    metadata = json.loads((run / "best_student" / "metadata.json").read_text())
    assert metadata["selection"] == "test" and metadata["config"]["selection"] == "test"
    assert metadata["test_accuracy"] == summary["best_student"]["test_at_best"]


# On torch, nothing imports TensorFlow before the data pipeline does, after asking whether it is installed.
# About 17 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    [
        "tensorflow",
        pytest.param("torch", marks=pytest.mark.needs_torch),
    ],
)
def test_piped_output_is_one_plain_line_per_epoch_and_numbered_like_the_files(tmp_path, backend):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mfef_keras.cli", "train", "--epochs", "2", "--run-dir", str(run), *TINY]
    env = subprocess_env()
    env["KERAS_BACKEND"] = backend
    # The TensorFlow defaults a user has: no log level chosen.
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    log = tmp_path / "train.log"
    with log.open("wb") as file:
        done = subprocess.run([*command, "--progress"], stdout=file, stderr=subprocess.STDOUT, env=env, timeout=300)
    output = log.read_text()
    assert done.returncode == 0, output
    assert not {"\r", "\b", "\x1b"} & set(output), repr(output)
    for banner in ("oneDNN", "absl::InitializeLog", "I0000", "cpu_feature_guard"):
        assert banner not in output, output
    epoch_lines = [line for line in output.splitlines() if line.startswith(("epoch", "Epoch"))]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"], output

    rows = epoch_rows(run)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert (run / "metrics.csv").read_text().splitlines()[1].startswith("1,")
    # The rates that were set (0.1, then x0.1 at the scaled milestone), not their float32 values.
    with (run / "metrics.csv").open() as file:
        assert [row["lr"] for row in csv.DictReader(file)] == ["0.1", "0.01"]
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best_student"]
    assert (
        f"best student: {best['name']}, epoch {best['best_epoch']} (validation {100 * best['best_val']:.2f}%, "
        f"test {100 * best['test_at_best']:.2f}%); epochs and student selected on the validation split"
    ) in output
    last = rows[-1]
    assert f"s1 {100 * last['val_acc_s1']:.2f}/{100 * last['test_acc_s1']:.2f}" in epoch_lines[-1]
    assert json.loads((run / "best_student" / "metadata.json").read_text())["epoch"] == best["best_epoch"]
    assert json.loads((run / "students" / "s0" / "metadata.json").read_text())["epoch"] == 2

    train_scalars = _tensorboard_scalars(run / "tensorboard" / "train")
    validation = _tensorboard_scalars(run / "tensorboard" / "validation")
    test = _tensorboard_scalars(run / "tensorboard" / "test")
    terms = {"loss", "ce_s0", "ce_s1", "ce_fused", "kd_s0", "kd_s1", "kd_fused"}
    accuracies = {"acc_s0", "acc_s1", "acc_fused", "acc_ensemble"}
    assert set(train_scalars) == terms | accuracies | {"learning_rate", "kd_weight"}
    assert set(validation) == set(test) == terms | accuracies
    for key, values in [*train_scalars.items(), *validation.items(), *test.items()]:
        assert [step for step, _ in values] == [1, 2], key
    assert [v for _, v in train_scalars["loss"]] == pytest.approx([row["loss"] for row in rows])
    assert [v for _, v in validation["acc_s1"]] == pytest.approx([row["val_acc_s1"] for row in rows])
    assert [v for _, v in test["acc_s1"]] == pytest.approx([row["test_acc_s1"] for row in rows])
    assert [v for _, v in train_scalars["learning_rate"]] == pytest.approx([row["lr"] for row in rows])


def _poison_epoch(monkeypatch, poisoned):
    """Make the training images of epoch ``poisoned`` (0-based) NaN."""
    import mfef_keras.data

    make_dataset = mfef_keras.data.make_dataset

    def nan_images(*args, seed=0, **kwargs):
        dataset = make_dataset(*args, seed=seed, **kwargs)
        # The runner seeds epoch e's pipeline with seed * 100_003 + e (seed 0 here).
        if kwargs["training"] and seed == poisoned:
            dataset = dataset.map(lambda images, labels: (images * float("nan"), labels))
        return dataset

    monkeypatch.setattr(mfef_keras.data, "make_dataset", nan_images)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison_epoch(monkeypatch, 1)
    run = tmp_path / "run"
    result = _run(["train", "--epochs", "3", "--run-dir", str(run), *TINY])
    assert result.exit_code != 0
    assert "Training diverged in epoch 2 (" in result.output and "Lower the learning rate" in result.output
    assert f"the last good checkpoint is kept in {run}" in result.output and "nan" in result.output
    with np.load(run / "checkpoint.npz") as checkpoint:
        state = json.loads(bytes(checkpoint["state"]).decode())
        assert state["epoch"] == 1 and all(np.isfinite(checkpoint[k]).all() for k in checkpoint.files if k != "state")
    assert len(epoch_rows(run)) == 1


def test_nan_loss_in_the_first_epoch_claims_no_checkpoint(tmp_path, monkeypatch):
    _poison_epoch(monkeypatch, 0)
    run = tmp_path / "run"
    result = _run(["train", "--epochs", "2", "--run-dir", str(run), *TINY])
    assert result.exit_code != 0 and "Training diverged in epoch 1 (" in result.output
    assert "no epoch had finished, so no checkpoint was kept" in result.output and "kept in" not in result.output
    assert not run.exists()


def test_a_full_disk_is_told_naming_the_run_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fsync = os.fsync
    checkpoint_writes = []

    def second_checkpoint_fills_the_disk(fd):
        if "checkpoint.npz" in os.readlink(f"/proc/self/fd/{fd}"):
            checkpoint_writes.append(fd)
            if len(checkpoint_writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", second_checkpoint_fills_the_disk)
    result = CliRunner().invoke(main, ["train", "--epochs", "2", "--run-dir", str(run), *TINY])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit, result.output
    assert f"Cannot write {run}: no space left on the device (ENOSPC)" in result.output
    assert f"the last good checkpoint is kept in {run}" in result.output and "run the same command" in result.output
    assert list(run.rglob(".*")) == []
    with np.load(run / "checkpoint.npz") as checkpoint:
        assert json.loads(bytes(checkpoint["state"]).decode())["epoch"] == 1


def test_dataset_without_test_images_is_a_data_error_not_divergence(tmp_path, monkeypatch):
    import dataclasses

    import mfef_keras.data

    root = tmp_path / "data"
    for label in ("a", "b"):
        _images(root / "train" / label, 4)
        (root / "test" / label).mkdir(parents=True)
    run = tmp_path / "run"
    args = ["train", "--run-dir", str(run), *TINY, "--batch-size", "8"]
    # The folder reader may refuse the empty split itself; either way the split is named, not the learning rate.
    result = CliRunner().invoke(main, [*args, "--dataset", f"folder:{root}"])
    assert result.exit_code == 1 and "diverged" not in result.output and "test" in result.output, result.output
    assert not run.exists()

    # Any other source that reports an empty test split is refused by the runner before training.
    dataset_info = mfef_keras.data.dataset_info
    monkeypatch.setattr(
        mfef_keras.data,
        "dataset_info",
        lambda *a, **k: dataclasses.replace(dataset_info(*a, **k), splits={"train": 1293, "val": 144, "test": 0}),
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Dataset digits has no test images (test split: 0 images)" in result.output
    assert not run.exists()


# The distiller's mirrored tests (tests/test_distiller.py) stay in the default run; this one adds the CLI path.
@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_matches_one_device(tmp_path):
    one = _run(["train", "--epochs", "1", "--run-dir", str(tmp_path / "one"), *TINY])
    two = _run(
        ["train", "--epochs", "1", "--strategy", "mirrored", "--cpu-devices", "2", "--run-dir", str(tmp_path / "two")]
        + TINY
    )
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    a, b = epoch_rows(tmp_path / "one")[0], epoch_rows(tmp_path / "two")[0]
    for key in ("loss", "ce_s0", "kd_fused", "val_loss", "val_ce_s1"):
        assert b[key] == pytest.approx(a[key], rel=1e-3), key


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multiworker_with_two_processes_on_localhost(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mfef_keras.cli", "train", "--epochs", "1", "--strategy", "multiworker"]
    command += ["--run-dir", str(run), *TINY]
    processes = []
    for index in range(2):
        env = subprocess_env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        )
    outputs = [p.communicate(timeout=400)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    single = _run(["train", "--epochs", "1", "--run-dir", str(tmp_path / "single"), *TINY])
    assert single.exit_code == 0
    a, b = epoch_rows(tmp_path / "single")[0], epoch_rows(run)[0]
    for key in ("loss", "val_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-2), key


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "cifar11"], "Unknown dataset 'cifar11'"),
        (["--backbone", "resnet9"], "Unknown backbone 'resnet9'"),
        (["--method", "dmll"], "Unknown method 'dmll'.*Did you mean 'dml'"),
        (["--strategy", "mirror"], "Unknown strategy 'mirror'.*Did you mean 'mirrored'"),
        (["--lr-milestones", "a,b"], "lr_milestones must be a list of integers .*comma-separated.*'a,b'"),
        (["--lr-decay", "1.5"], r"lr_decay must be > 0 and <= 1, got 1\.5"),
        (["--base-width", "0"], "base_width must be a positive integer or null, got 0"),
        (["--batch-size", "100000000"], r"batch_size 100000000 .*larger than the training set \(128 images.*or less"),
        (
            ["--strategy", "mirrored", "--cpu-devices", str(os.cpu_count() + 1)],
            f"cpu_devices {os.cpu_count() + 1} .*more than the {os.cpu_count()} CPU cores",
        ),
    ],
)
def test_bad_options_are_refused_before_training(tmp_path, args, message):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--run-dir", str(run), *TINY, *args])
    assert result.exit_code != 0
    assert __import__("re").search(message, result.output), result.output
    assert not run.exists()


def test_unknown_config_key_names_key_and_file(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("epochs: 2\nlearning_rat: 0.1\n")
    result = CliRunner().invoke(main, ["train", "--config", str(file), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "learning_rat" in result.output and "bad.yaml" in result.output and "learning_rate" in result.output


def _images(folder, count, start=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")


# Two child trainings, about 25 s: slow, run by .ci/run step 3; the default suite keeps the refusal of a changed
# config on resume (test_resume_cli).
@pytest.mark.slow
def test_resume_after_the_training_folder_changed_is_refused_and_nothing_is_written(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        _images(root / "train" / label, 4)
        _images(root / "valid" / label, 1)
        _images(root / "test" / label, 2)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mfef_keras.cli", "train", "--dataset", f"folder:{root}", "--epochs", "1"]
    command += ["--run-dir", str(run), *TINY, "--batch-size", "8"]
    first = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    # The folder's own valid/ validates: nothing is held out of train.
    assert json.loads((run / "data.json").read_text())["splits"] == {"train": 8, "val": 2, "test": 4}
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    for label in ("a", "b"):
        _images(root / "train" / label, 4, start=4)
    again = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert again.returncode != 0
    assert "Traceback" not in again.stdout + again.stderr
    assert "train split: 8 -> 16 images" in again.stderr and "training examples used: 8 -> 16" in again.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_corrupt_image_in_a_folder_dataset_is_named_and_nothing_is_left(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        for label in ("a", "b"):
            _images(root / split / label, 3)
    (root / "train" / "b" / "broken.png").write_bytes(b"not a png at all")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--dataset", f"folder:{root}", "--run-dir", str(run), *TINY])
    assert result.exit_code != 0
    assert "broken.png" in result.output
    assert not run.exists()
