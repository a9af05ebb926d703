"""The follow-up studies written down before running: each SETTING.md's own command, as a user will run it.

Each command runs in its own process with `--no-train` on copies of the main study's committed runs that the
setting says it reuses: `mfef study` must accept them as trained with its configuration (else the follow-up
would retrain or refuse them), and a command with a typo in an option fails here rather than hours later.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_mfef

DOCS = Path(__file__).resolve().parents[1] / "docs"
MAIN_RUNS = DOCS / "study-fashion-mnist-compressed" / "runs"


def _setting_command(study: str, out: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments after `mfef study` in ``study``'s SETTING.md, with ``out`` for its folder, and its variables."""
    block = (DOCS / study / "SETTING.md").read_text().split("```bash\n")[1].split("\n```")[0]
    variables = {"S": str(out)}
    for line in block.splitlines():
        name, equals, value = line.partition("=")
        if equals and name.isidentifier():
            variables[name] = shlex.split(value, comments=True)[0]
    command = block[block.index("mfef study") :].replace("\\\n", " ").splitlines()[0]
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    arguments = shlex.split(command)[2:]
    arguments[arguments.index("--out") + 1] = str(out)
    return arguments, variables


def _copy_results(run_name: str, out: Path) -> None:
    source, target = MAIN_RUNS / run_name, out / "runs" / run_name
    target.mkdir(parents=True)
    for name in ("config.json", "summary.json", "metrics.json"):
        shutil.copyfile(source / name, target / name)


@pytest.mark.parametrize(
    ("study", "reused"),
    [
        ("study-fashion-mnist-resnet32-peer", ["independent@resnet8"]),
        ("study-fashion-mnist-mfef-ablation", ["independent@resnet8", "mfef@{cohort}"]),
    ],
)
def test_a_follow_up_study_accepts_the_main_study_runs_it_reuses(tmp_path, study, reused):
    out = tmp_path / study
    arguments, variables = _setting_command(study, out)
    cohort = variables.get("C", "").replace(",", "+")
    names = [f"{variant.format(cohort=cohort)}-seed{seed}" for variant in reused for seed in (0, 1)]
    for name in names:
        _copy_results(name, out)
    result = run_mfef("study", *arguments, "--no-train")
    assert result.returncode == 0, result.stderr
    runs = json.loads((out / "study.json").read_text())["runs"]
    assert sorted(Path(run).name for by_seed in runs.values() for run in by_seed.values()) == sorted(names)


def test_the_confirmatory_study_runs_fresh_seeds_and_uses_none_of_the_main_study(tmp_path):
    out = tmp_path / "confirmatory"
    arguments, _ = _setting_command("study-fashion-mnist-confirmatory", out)
    assert arguments[arguments.index("--first-seed") + 1] == "5" and arguments[arguments.index("--seeds") + 1] == "10"
    # A main-study run copied in by mistake (seed 0) is not one of its seeds: nothing to tabulate.
    _copy_results("independent@resnet8-seed0", out)
    result = run_mfef("study", *arguments, "--no-train")
    one_error_line(result, "No run of the study", "has finished yet")
