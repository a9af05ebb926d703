"""`mfef train --strategy mirrored` on JAX: `keras.distribution.DataParallel` over two CPU devices; and
`--strategy multiworker`: two processes of one CPU device each, joined by `jax.distributed`. The runs are
marked slow (about 3 minutes together); `.ci/run` runs them after the default suite.

A data-parallel JAX step is one program over the global batch, so a run over two devices must follow the
run on one device (same loss terms, same BatchNorm statistics, nothing rescaled), the last partial batch
included. Of 71 training images the run keeps 70, so that every batch (32, 32, 6) splits over the two
devices; evaluation, whose splits hold an odd number of images, gives each device whole batches.

The two are not equal bit for bit: the first step's gradients of the classifiers agree to 2e-7, but
below them, where the gradient is a sum of near-cancelling terms at initialisation, summation order alone
moves it by up to 3e-3 (relative norm; the same on random images), and on these images such a difference
grows with each step. The runs are kept to one epoch of three steps at a small rate; the tolerance is
well under what per-device BatchNorm statistics (a different loss from the first batch) would give.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import subprocess_env

pytestmark = pytest.mark.needs_jax

ARGS = ["--dataset", "digits", "--backbone", "resnet8", "--base-width", "16"]
ARGS += ["--batch-size", "32", "--eval-batch-size", "64", "--epochs", "1", "--lr", "0.01", "--rampup-epochs", "1"]
ARGS += ["--no-progress"]


def _command(run_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mfef_keras.cli", "train", "--run-dir", str(run_dir), *ARGS, *extra]


def _train(run_dir, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(run_dir, *extra), env=subprocess_env(KERAS_BACKEND="jax"), capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The metrics of the reference run: one device, the 70 images the two-device runs keep of 71."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    result = _train(run_dir, "--train-limit", "70")
    assert result.returncode == 0, result.stderr
    return _rows(run_dir)


def _assert_follows(rows: list[dict], reference: list[dict], same_eval_batches: bool = True) -> None:
    # Evaluation's loss terms are means of batch means, which depend on the batch size; its accuracies do not.
    eval_losses = ("val_loss", "test_ce_s1") if same_eval_batches else ()
    for a, b in zip(reference, rows, strict=True):
        for key in ("loss", "ce_s0", "ce_fused", "kd_fused", "kd_weight", *eval_losses):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=2e-3), (a["epoch"], key)
        for key in ("val_acc_s0", "test_acc_fused", "test_acc_ensemble"):
            assert float(b[key]) == pytest.approx(float(a[key]), abs=0.02), (a["epoch"], key)


def _rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_cpu_devices_train_as_one_device(tmp_path, one_device):
    two = _train(tmp_path / "two", "--train-limit", "71", "--strategy", "mirrored", "--cpu-devices", "2")
    assert two.returncode == 0, two.stderr
    assert "data-parallel over 2 devices" in two.stdout
    assert "Training on 70 of the 71 images" in two.stdout
    _assert_follows(_rows(tmp_path / "two"), one_device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_as_one_device(tmp_path, one_device):
    run_dir = tmp_path / "run"
    address = f"127.0.0.1:{_free_port()}"
    processes = []
    for index in range(2):
        env = subprocess_env(KERAS_BACKEND="jax")
        env.update(
            KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
            KERAS_DISTRIBUTION_NUM_PROCESSES="2",
            KERAS_DISTRIBUTION_PROCESS_ID=str(index),
        )
        # Evaluation batches of 63 do not split over 2 devices: every process feeds each one whole.
        command = _command(run_dir, "--train-limit", "71", "--eval-batch-size", "63", "--strategy", "multiworker")
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    chief_output = outputs[0][0]
    assert "data-parallel over 2 devices" in chief_output and "Training on 70 of the 71 images" in chief_output
    _assert_follows(_rows(run_dir), one_device, same_eval_batches=False)
    # Only process 0 writes the run directory; the other's files went to a directory of its own.
    assert sorted(p.name for p in (run_dir / "students").iterdir()) == ["s0", "s1"]


def test_multiworker_without_a_cluster_is_refused_with_what_to_set(tmp_path):
    result = _train(tmp_path / "run", "--strategy", "multiworker")
    assert result.returncode != 0
    assert "KERAS_DISTRIBUTION_JOB_ADDRESSES" in result.stderr and "KERAS_DISTRIBUTION_PROCESS_ID" in result.stderr
    assert not (tmp_path / "run").exists()


def test_more_cpu_devices_than_cores_are_refused(tmp_path):
    cores = os.cpu_count() or 1
    result = _train(tmp_path / "run", "--strategy", "mirrored", "--cpu-devices", str(cores + 1))
    assert result.returncode != 0
    assert "CPU cores of this machine" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_batch_the_devices_cannot_share_is_refused_before_anything_is_written(tmp_path):
    result = _train(tmp_path / "run", "--batch-size", "31", "--strategy", "mirrored", "--cpu-devices", "2")
    assert result.returncode != 0
    assert "batch_size 31 (--batch-size) cannot be shared by the 2 devices of this data-parallel run" in result.stderr
    assert not (tmp_path / "run").exists()
