"""A study's convergence table and figure: the deployed students' test top-1 at every epoch, mean over seeds.

The user flow runs `mfef study --no-train` in its own process on a copy of runs of the real Fashion-MNIST study
committed under docs/ (their config, summary and per-epoch metrics), and checks the table against those files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matplotlib.image import imread

from mfef_keras.training.study_convergence import deployed_curve, format_convergence, mean_curves
from tests.helpers import copy_run_results, run_mfef, setting_command

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "study-fashion-mnist-compressed"
VARIANTS, SEEDS = ("independent@resnet8", "mfef@resnet20+resnet8"), (0, 1)


def _epoch_accuracy(run: Path, epoch: int) -> float:
    """The deployed student's test top-1 (%) at ``epoch``, read straight from the run's files."""
    name = json.loads((run / "summary.json").read_text())["best_student"]["name"]
    row = json.loads((run / "metrics.json").read_text())["epochs"][epoch - 1]
    assert row["epoch"] == epoch
    return 100 * row[f"test_acc_{name}"]


def test_study_no_train_tabulates_and_draws_where_the_deployed_students_stop_moving(tmp_path):
    out = tmp_path / STUDY.name
    for variant in VARIANTS:
        for seed in SEEDS:
            copy_run_results(STUDY / "runs" / f"{variant}-seed{seed}", out / "runs")
    arguments, _ = setting_command(STUDY, out)
    result = run_mfef("study", *arguments, "--no-train")
    assert result.returncode == 0, result.stderr
    assert f"{out}/convergence.png" in result.stdout

    table = (out / "table.md").read_text()
    assert "change from epoch 12 to the end" in table
    for variant in VARIANTS:
        runs = [out / "runs" / f"{variant}-seed{seed}" for seed in SEEDS]
        expected = [sum(_epoch_accuracy(run, epoch) for run in runs) / len(runs) for epoch in (12, 13, 14, 15)]
        line = next(line for line in table.splitlines() if line.startswith(f"| {variant} | 2 | "))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert [float(cell) for cell in cells[2:6]] == pytest.approx(expected, abs=0.006)
        assert float(cells[6]) == pytest.approx(expected[-1] - expected[0], abs=0.006)
    curves = json.loads((out / "study.json").read_text())["deployed_test_top1_per_epoch"]
    assert sorted(curves) == sorted(VARIANTS) and all(len(curve) == 15 for curve in curves.values())
    # Two panels side by side, 13 x 5.2 inches at 100 dpi.
    assert imread(out / "convergence.png").shape[:2] == (520, 1300)


def _run(accuracies: list[float], deployed: str | None = "s1") -> tuple[list[dict], dict]:
    """A run's metrics.json rows and summary.json: s1's test top-1 per epoch, s0 flat."""
    epochs = [{"epoch": i + 1, "test_acc_s0": 0.5, "test_acc_s1": value} for i, value in enumerate(accuracies)]
    return epochs, ({"best_student": {"name": deployed}} if deployed else {})


def test_curves_average_seeds_epoch_by_epoch_and_leave_out_variants_they_cannot_average():
    runs, summaries = {}, {}
    cases = {
        "averaged": [[0.80, 0.90, 0.92], [0.82, 0.88, 0.90]],
        "epochs differ": [[0.8, 0.9], [0.8, 0.9, 0.9]],
    }
    for variant, seeds in cases.items():
        for seed, accuracies in enumerate(seeds):
            run, summary = _run(accuracies)
            runs.setdefault(variant, {})[seed] = run
            summaries.setdefault(variant, {})[seed] = summary
    run, summary = _run([0.8], deployed=None)
    runs["older"], summaries["older"] = {0: run}, {0: summary}
    assert deployed_curve(run, summary) is None
    runs["unrecorded"], summaries["unrecorded"] = {0: None}, {0: {"best_student": {"name": "s1"}}}

    curves = mean_curves(runs, summaries)
    assert list(curves) == ["averaged"]
    assert curves["averaged"] == pytest.approx([81.0, 89.0, 91.0])
    table = format_convergence(curves, {"averaged": 2}, last=1)
    assert "| averaged | 2 | 89.00 | 91.00 | +2.00 |" in table
    assert re.search(r"\| method \| seeds \| epoch 2 \| epoch 3 \| change \(points\) \|", table)
    assert format_convergence({}, {}) == ""


def test_a_change_that_rounds_to_zero_reads_plus_zero():
    table = format_convergence({"flat": [92.170, 92.168]}, {"flat": 3}, last=1)
    assert "| flat | 3 | 92.17 | 92.17 | +0.00 |" in table
