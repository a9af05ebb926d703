"""The cosine learning-rate schedule: PyTorch's per-epoch CosineAnnealingLR, in the library and the CLI."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import numpy as np
import pytest

from mfef_keras.distill import OnlineDistiller
from mfef_keras.distill.schedules import CosineEpochDecay
from mfef_keras.models import build_students
from mfef_keras.training.config import TrainConfig
from tests.helpers import subprocess_env


def test_the_rate_follows_the_cosine_of_the_epoch_and_is_constant_within_one():
    schedule = CosineEpochDecay(0.2, steps_per_epoch=7, epochs=5)
    for step in (0, 6, 7, 13, 20, 34, 40):
        epoch = step // 7
        expected = 0.2 * (1 + math.cos(math.pi * min(epoch, 5) / 5)) / 2
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
    assert CosineEpochDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        CosineEpochDecay(0.1, 7, 0)


def test_the_distiller_anneals_with_cosine_when_asked_and_refuses_it_without_the_epochs():
    distiller = OnlineDistiller(build_students("resnet8", 3, base_width=4, input_shape=(16, 16, 3)), method="dml")
    with pytest.raises(ValueError, match="pass compile\\(lr_epochs=...\\)"):
        distiller.compile(lr_schedule="cosine")
    with pytest.raises(ValueError, match="lr_schedule must be one of step, cosine, got 'linear'"):
        distiller.compile(lr_schedule="linear")
    distiller.compile(lr_schedule="cosine", lr_epochs=4, steps_per_epoch=2)
    distiller.prepare()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 16, 16, 3)).astype("float32"), rng.integers(0, 3, size=8)
    rates = []
    for epoch in range(3):
        rates.append(float(distiller.student_optimizer.learning_rate))
        distiller.fit(x, y, batch_size=4, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
    assert rates == pytest.approx([0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05], rel=1e-6)
    assert float(distiller.fusion_optimizer.learning_rate if distiller.fusion_optimizer else rates[0]) > 0


def test_the_config_refuses_milestones_with_a_cosine_schedule():
    with pytest.raises(ValueError, match="lr_schedule cosine anneals over the run without them"):
        TrainConfig(lr_schedule="cosine", lr_milestones=[5])
    with pytest.raises(ValueError, match="Unknown lr_schedule 'cosin'.*Did you mean 'cosine'"):
        TrainConfig(lr_schedule="cosin")


# A child training of about 18 s: slow, run by .ci/run step 3; the schedule's rates stay tested in-process above.
@pytest.mark.slow
def test_mfef_train_with_a_cosine_schedule_records_each_epochs_rate(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", "train", "--lr-schedule", "cosine", "--epochs", "2"]
        + ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress", "--run-dir", str(run)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with open(run / "metrics.csv") as file:
        rates = [float(row["lr"]) for row in csv.DictReader(file)]
    assert rates == pytest.approx([0.1, 0.05], rel=1e-6)
