"""A finished run extended with a larger --epochs goes on from its last epoch with the schedule it had."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mfef_keras.training.config import TrainConfig
from tests.helpers import epoch_rows, subprocess_env

TINY = ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress", "--method", "dml"]


def _train(run, epochs, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mfef_keras.cli",
            "train",
            *TINY,
            "--epochs",
            str(epochs),
            "--run-dir",
            str(run),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )


# Four trainers in child processes (30 s): out of the default suite (kept under 10 minutes), run by .ci/run's slow
# step.
@pytest.mark.slow
def test_a_finished_run_is_extended_from_its_last_epoch_at_its_last_rate(tmp_path):
    run = tmp_path / "run"
    assert _train(run, 2).returncode == 0
    before = epoch_rows(run)
    extended = _train(run, 3)
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert "Extending" in extended.stdout and "schedule stays that of 2 epochs" in extended.stdout
    rows = epoch_rows(run)
    assert [row["epoch"] for row in rows] == [1, 2, 3] and rows[:2] == before
    # Two epochs decay once, after the first: the added epoch keeps the last rate.
    assert [row["lr"] for row in rows] == pytest.approx([0.1, 0.01, 0.01])
    stored = json.loads((run / "config.json").read_text())["config"]
    assert stored["epochs"] == 3 and stored["schedule_epochs"] == 2
    assert json.loads((run / "students" / "s0" / "metadata.json").read_text())["epoch"] == 3
    again = _train(run, 3)
    assert again.returncode == 0 and "Extending" in again.stdout and len(epoch_rows(run)) == 3
    shorter = _train(run, 2)
    assert shorter.returncode != 0 and "differs in: epochs" in shorter.stderr


# Two trainers in child processes (14 s): out of the default suite (kept under 10 minutes), run by .ci/run's slow
# step.
@pytest.mark.slow
def test_a_cosine_run_is_not_extended(tmp_path):
    run = tmp_path / "cosine"
    assert _train(run, 1, "--lr-schedule", "cosine").returncode == 0
    refused = _train(run, 2, "--lr-schedule", "cosine")
    assert refused.returncode != 0 and "cannot be extended" in refused.stderr and "Traceback" not in refused.stderr
    assert len(epoch_rows(run)) == 1


def test_the_schedule_span_scales_the_default_milestones_and_ramp_up():
    config = TrainConfig(epochs=30, schedule_epochs=20)
    assert config.effective_lr_milestones == [10, 15] and config.effective_rampup_epochs == pytest.approx(20 * 80 / 300)
    with pytest.raises(ValueError, match="schedule_epochs must be null or an integer from 1 to epochs \\(30\\)"):
        TrainConfig(epochs=30, schedule_epochs=31)
