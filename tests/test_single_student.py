"""One student trained alone (``--method independent --students 1``, the plain-training baseline), end to end.

Each command runs in a process of its own on what the previous one wrote: train, publish to a zoo, list it,
evaluate the published preset. The distillation methods refuse a single student.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mfef_keras.training.run_directory import summary_models
from tests.helpers import subprocess_env

NAME = "resnet8_independent.digits_alone0"
# Enough images and a gentle enough rate for a student that is right about half the time, not a constant guess.
TINY = ["--backbone", "resnet8", "--base-width", "16", "--train-limit", "512", "--epochs", "2", "--batch-size", "32"]
TINY += ["--lr", "0.05"]


def _mfef(*args, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# Slow (train, publish and evaluate in processes of their own); .ci/run runs it.
@pytest.mark.slow
def test_one_student_trains_alone_publishes_and_its_preset_reproduces_its_card(tmp_path):
    zoo = tmp_path / "zoo"
    env = subprocess_env(MFEF_ZOO_CACHE=str(tmp_path / "cache"), MFEF_ZOO_MANIFEST=str(zoo / "manifest.json"))
    run = tmp_path / "run"
    output = _ok(_mfef("train", "--method", "independent", "--students", "1", *TINY, "--run-dir", run, env=env))
    assert "best student: s0" in output
    summary = json.loads((run / "summary.json").read_text())
    assert summary_models(summary) == ["ensemble", "s0"] and summary["selection"] == "validation"
    assert sorted(p.name for p in (run / "students").iterdir()) == ["s0"]

    _ok(_mfef("zoo", "publish", run, "--name", NAME, "--out", zoo, env=env))
    entry = json.loads((zoo / "manifest.json").read_text())["presets"][NAME]
    best = summary["best_student"]
    assert (entry["selection"], entry["epoch"], entry["num_students"]) == ("validation", best["best_epoch"], 1)
    assert (entry["test_accuracy"], entry["test_accuracy_last"]) == (best["test_at_best"], best["test_last"])
    card = (zoo / NAME / "README.md").read_text()
    percent = f"{100 * entry['test_accuracy']:.2f}%"
    assert f"**Test top-1 accuracy: {percent}** on the 360-image test split" in card
    # One student: only the epoch is selected, on the validation split held out of digits' 1,437 training images.
    assert "Epoch selected on the 144-image validation split held out from the 1,437 training images" in card
    command = next(line for line in card.splitlines() if line.startswith("mfef train "))
    for flags in ("--method independent --students 1", "--train-limit 512", "--lr 0.05", "--selection validation"):
        assert flags in command
    assert (zoo / NAME / "metrics.csv").read_bytes() == (run / "metrics.csv").read_bytes()

    listed = _ok(_mfef("zoo", "list", "*_alone0", env=env)).splitlines()[1].split()
    assert listed[:3] + listed[4:7] == [NAME, "digits", "resnet8", "independent", percent, "(val-selected)"]

    # The preset as users get it: by name, pulled from the manifest into the cache, evaluated afresh.
    output = _ok(_mfef("eval", NAME, env=env, cwd=tmp_path))
    assert f"digits test (360 images): top-1 {percent}" in output
    metrics = json.loads((tmp_path / f"{NAME}-eval/metrics.json").read_text())
    # Counted in images: training recorded a float32 mean, eval a float64 one, of the same correct predictions.
    assert round(metrics["top1"] * 360) == round(entry["test_accuracy"] * 360)


@pytest.mark.parametrize("method", ["mfef", "dml", "ffl"])
def test_one_student_is_refused_by_the_distillation_methods(method, tmp_path):
    result = _mfef(
        "train", "--method", method, "--students", "1", *TINY, "--run-dir", tmp_path / "run", env=subprocess_env()
    )
    assert result.returncode == 1
    message = (
        f"num_students must be >= 2 for online distillation with {method}, got 1 "
        "(one student trains alone only with --method independent)."
    )
    assert re.sub(r"\s+", " ", result.stderr).strip() == f"Error: {message}"
    assert not (tmp_path / "run").exists()
