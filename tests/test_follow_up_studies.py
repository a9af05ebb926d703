"""The follow-up studies written down before running: each SETTING.md's own command, as a user will run it.

Each command runs in its own process with `--no-train` on copies of the main study's committed runs that the
setting says it reuses: `mfef study` must accept them as trained with its configuration (else the follow-up
would retrain or refuse them), and a command with a typo in an option fails here rather than hours later.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import copy_run_results, one_error_line, run_mfef, setting_command

DOCS = Path(__file__).resolve().parents[1] / "docs"
MAIN_RUNS = DOCS / "study-fashion-mnist-compressed" / "runs"


@pytest.mark.parametrize(
    ("study", "reused"),
    [
        ("study-fashion-mnist-resnet32-peer", ["independent@resnet8"]),
        ("study-fashion-mnist-mfef-ablation", ["independent@resnet8", "mfef@{cohort}"]),
    ],
)
def test_a_follow_up_study_accepts_the_main_study_runs_it_reuses(tmp_path, study, reused):
    out = tmp_path / study
    arguments, variables = setting_command(DOCS / study, out)
    cohort = variables.get("C", "").replace(",", "+")
    names = [f"{variant.format(cohort=cohort)}-seed{seed}" for variant in reused for seed in (0, 1)]
    for name in names:
        copy_run_results(MAIN_RUNS / name, out / "runs")
    result = run_mfef("study", *arguments, "--no-train")
    assert result.returncode == 0, result.stderr
    runs = json.loads((out / "study.json").read_text())["runs"]
    assert sorted(Path(run).name for by_seed in runs.values() for run in by_seed.values()) == sorted(names)


def test_the_confirmatory_study_runs_fresh_seeds_and_uses_none_of_the_main_study(tmp_path):
    out = tmp_path / "confirmatory"
    arguments, _ = setting_command(DOCS / "study-fashion-mnist-confirmatory", out)
    assert arguments[arguments.index("--first-seed") + 1] == "5" and arguments[arguments.index("--seeds") + 1] == "10"
    # A main-study run copied in by mistake (seed 0) is not one of its seeds: nothing to tabulate.
    copy_run_results(MAIN_RUNS / "independent@resnet8-seed0", out / "runs")
    result = run_mfef("study", *arguments, "--no-train")
    one_error_line(result, "No run of the study", "has finished yet")
