"""Resuming a run through the `mfef` CLI: after a kill, under another trainer's lock, and from damaged files.

Each trainer that is killed runs in a process of its own; the others go through click's runner.
"""

import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from mfef_keras.cli import main
from mfef_keras.training.run_directory import LOCK_FILE
from tests.helpers import epoch_rows, subprocess_env

TINY = ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress"]


def _kd_weight(epoch, rampup):
    return math.exp(-5 * (1 - min(epoch, rampup) / rampup) ** 2)


def test_killed_run_resumes_with_schedule_and_rampup_intact(tmp_path):
    run = tmp_path / "run"
    # A larger split than TINY's, so that epoch 3 is still running when the kill lands.
    args = ["train", "--epochs", "4", "--rampup-epochs", "3", "--run-dir", str(run), *TINY, "--train-limit", "1024"]
    command = [sys.executable, "-m", "mfef_keras.cli", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env()
    )
    deadline = time.time() + 240
    for line in process.stdout:
        if line.startswith("epoch 2/4") or time.time() > deadline:
            break
    time.sleep(0.5)  # into epoch 3
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done_before = [r["epoch"] for r in epoch_rows(run)]
    assert done_before == [1, 2] and not (run / "summary.json").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resuming {run} after epoch 2 of 4" in resumed.stdout
    rows = epoch_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    # w(t) counts t from 0: epoch 1 trains at t = 0.
    assert [r["kd_weight"] for r in rows] == pytest.approx([_kd_weight(e - 1, 3) for e in range(1, 5)], rel=1e-5)
    with np.load(run / "checkpoint.npz") as checkpoint:
        assert json.loads(bytes(checkpoint["state"]).decode())["epoch"] == 4


# About 10 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_damaged_run_files_are_named_and_leftovers_swept_on_resume(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--epochs", "1", "--run-dir", str(run), *TINY]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    checkpoint = (run / "checkpoint.npz").read_bytes()
    config = (run / "config.json").read_text()

    (run / "checkpoint.npz").write_bytes(checkpoint[: len(checkpoint) // 2])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Checkpoint {run / 'checkpoint.npz'} is damaged" in result.output and "Delete " in result.output
    (run / "checkpoint.npz").write_bytes(checkpoint)

    (run / "config.json").write_text(config[:20])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and f"{run / 'config.json'} is not valid JSON" in result.output
    (run / "config.json").write_text(config)

    # What kills during writes leave behind: temporary checkpoints and staging folders.
    for name in (".checkpoint.npz.k1ll3d00.tmp", ".metrics.json.k1ll3d01.tmp"):
        (run / name).write_bytes(bytes(1000))
    (run / ".best_student.k1ll3d02").mkdir()
    (run / "students" / ".s0.k1ll3d03").mkdir()
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "Removed 4 temporary files left by an interrupted run" in result.output
    assert list(run.rglob(".*")) == []


def test_run_directory_of_another_config_is_refused(tmp_path):
    run = tmp_path / "run"
    assert CliRunner().invoke(main, ["train", "--epochs", "1", "--run-dir", str(run), *TINY]).exit_code == 0
    before = sorted(p.name for p in run.rglob("*"))
    result = CliRunner().invoke(main, ["train", "--epochs", "1", "--method", "dml", "--run-dir", str(run), *TINY])
    assert result.exit_code != 0 and "belongs to a different configuration" in result.output
    assert "method" in result.output
    assert sorted(p.name for p in run.rglob("*")) == before


# Three trainers (30 s): out of the default suite (kept under 10 minutes), run by .ci/run's slow step; the killed
# run's resume above stays in the default suite.
@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mfef_keras.cli", "train", "--epochs", "2", "--run-dir", str(run), *TINY]
    command += ["--train-limit", "1024"]
    holder = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env()
    )
    deadline = time.time() + 120
    while not ((run / LOCK_FILE).exists() and (run / LOCK_FILE).read_text()) and time.time() < deadline:
        time.sleep(0.1)
    second = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert holder.poll() is None, "the first trainer ended before the second one tried"
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"Run directory {run} is in use by another trainer (PID {holder.pid} on " in second.stderr, second.stderr

    for line in holder.stdout:
        if line.startswith("epoch 1/2") or time.time() > deadline + 240:
            break
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run / LOCK_FILE).exists()
    resumed = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Taking over the lock of {run} from PID {holder.pid} on " in resumed.stdout
    assert f"Resuming {run} after epoch 1 of 2." in resumed.stdout
    assert [r["epoch"] for r in epoch_rows(run)] == [1, 2] and not (run / LOCK_FILE).exists()


def test_checkpoint_of_another_model_is_refused_naming_the_variable(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--epochs", "1", "--run-dir", str(run), *TINY]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    with np.load(run / "checkpoint.npz") as checkpoint:
        arrays = dict(checkpoint)
    renamed = next(k for k in arrays if k.startswith("weights/") and k.endswith("/kernel"))
    arrays[renamed.replace("/kernel", "/kernel_v2")] = arrays.pop(renamed)
    np.savez(run / "checkpoint.npz", **arrays)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"missing from the checkpoint: {renamed}" in result.output, result.output
    assert "Delete " in result.output and "--run-dir" in result.output
