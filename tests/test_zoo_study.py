"""Students published from a comparison study carry the study's figures over seeds, and `mfef zoo list` picks by them.

The study is the real Fashion-MNIST one committed under docs/: its study.json and its runs' results (config,
summary, metrics, student cards). The weights are not committed, so each student directory gets an untrained
network of the backbone its card names; what is checked is which figures travel with which student.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfef_keras.models import get_backbone
from mfef_keras.student_dir import read_card
from mfef_keras.zoo.manifest import read_manifest
from mfef_keras.zoo.publish import publish
from tests.helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "study-fashion-mnist-compressed"
MIXED, TWINS, ALONE = "mfef@resnet20+resnet8", "mfef@resnet8+resnet8", "independent@resnet8"


def _with_untrained_weights(run: Path) -> None:
    for card_file in [run / "best_student" / "metadata.json", *run.glob("students/*/metadata.json")]:
        card = read_card(card_file.parent)
        shape = card.dataset.image_shape
        get_backbone(card.backbone, card.dataset.num_classes, input_shape=shape).save(card_file.parent / "model.keras")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A copy of the committed study's table and of three of its seed-0 runs, students given weights."""
    copy = tmp_path_factory.mktemp("study") / STUDY.name
    (copy / "runs").mkdir(parents=True)
    shutil.copyfile(STUDY / "study.json", copy / "study.json")
    for variant in (MIXED, TWINS, ALONE):
        shutil.copytree(STUDY / "runs" / f"{variant}-seed0", copy / "runs" / f"{variant}-seed0")
        _with_untrained_weights(copy / "runs" / f"{variant}-seed0")
    return copy


def _row(variant: str, model: str) -> dict:
    rows = json.loads((STUDY / "study.json").read_text())["rows"]
    return next(row for row in rows if (row["variant"], row["model"]) == (variant, model))


def _mfef(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", *args],
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _publish(study: Path, variant: str, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    run = study / "runs" / f"{variant}-seed0"
    return _mfef(
        "zoo", "publish", str(run), "--study", str(study), "--name", name, "--out", str(out), *extra, cwd=out.parent
    )


def test_study_runs_publish_with_their_cells_figures_and_zoo_list_picks_by_them(study, tmp_path):
    out = tmp_path / "presets"
    result = _publish(study, MIXED, "resnet8_mfef.fashion_mnist_studys0", out)
    assert result.returncode == 0, result.stderr
    # The other two in this process: the command's own path is the one above, and each child costs seconds.
    runs = study / "runs"
    publish(runs / f"{MIXED}-seed0", "resnet20_mfef.fashion_mnist_studys0", out, student=0, study_dir=study)
    publish(runs / f"{ALONE}-seed0", "resnet8_independent.fashion_mnist_studys0", out, study_dir=study)

    manifest = read_manifest(out / "manifest.json")
    deployed, baseline = _row(MIXED, "deployed"), _row(ALONE, "deployed")
    card = read_card(out / "resnet8_mfef.fashion_mnist_studys0")
    figures = card.study
    assert (figures["variant"], figures["role"], figures["baseline"]) == (MIXED, "deployed", ALONE)
    assert figures["test_top1_mean"] == pytest.approx(deployed["test_at_best_mean"])
    assert figures["seeds"] == deployed["n"] >= 2
    assert figures["diff_vs_baseline_mean"] == pytest.approx(deployed["diff_vs_independent_mean"])
    assert figures["diff_significant"] == deployed["diff_vs_independent_significant"]
    assert figures["diff_p_holm"] == pytest.approx(deployed["diff_vs_independent_p_holm"])
    assert 0 < figures["diff_p_holm"] <= 1
    assert figures["command"].startswith("mfef study --dataset fashion_mnist ")
    assert manifest["resnet8_mfef.fashion_mnist_studys0"]["study"] == figures
    model_card = (out / "resnet8_mfef.fashion_mnist_studys0" / "README.md").read_text()
    assert "## Study" in model_card and figures["command"] in model_card
    assert f"{deployed['test_at_best_mean']:.2f} %" in model_card

    peer = read_card(out / "resnet20_mfef.fashion_mnist_studys0").study
    assert (peer["role"], peer["diff_vs_baseline_mean"]) == ("peer", None)
    assert peer["test_top1_mean"] == pytest.approx(_row(MIXED, "peer")["test_at_best_mean"])
    alone = read_card(out / "resnet8_independent.fashion_mnist_studys0").study
    assert alone["variant"] == alone["baseline"] == ALONE

    env = subprocess_env() | {"MFEF_ZOO_MANIFEST": str(out / "manifest.json"), "MFEF_ZOO_CACHE": str(tmp_path / "c")}
    listed = _mfef("zoo", "list", "*.fashion_mnist_studys0", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.startswith("resnet")}
    assert (
        f"{deployed['test_at_best_mean']:.2f}% ±{deployed['test_at_best_ci95']:.2f} ({deployed['n']})"
        in (rows["resnet8_mfef.fashion_mnist_studys0"])
    )
    assert f"{deployed['diff_vs_independent_mean']:+.2f} ±" in rows["resnet8_mfef.fashion_mnist_studys0"]
    assert "baseline" in rows["resnet8_independent.fashion_mnist_studys0"]
    # The smallest students are the two resnet8s: the one with the higher mean over seeds is the pick for size.
    smaller = "resnet8_mfef" if deployed["test_at_best_mean"] > baseline["test_at_best_mean"] else "resnet8_independent"
    pick = next(line for line in listed.stdout.splitlines() if line.strip().startswith("fashion_mnist:"))
    assert pick.split("for size take ")[1].startswith(f"{smaller}.fashion_mnist_studys0 (78,426 parameters")
    assert "mean of" in pick

    info = _mfef("zoo", "info", "resnet8_mfef.fashion_mnist_studys0", cwd=tmp_path, env=env)
    assert info.returncode == 0, info.stderr
    assert f"deployed student of {MIXED} in study {STUDY.name}" in info.stdout
    assert f"Holm-adjusted p {figures['diff_p_holm']:.3f}" in info.stdout
    assert re.search(r"^study command +mfef study --dataset fashion_mnist ", info.stdout, re.MULTILINE)


def test_students_without_figures_of_their_own_and_runs_outside_the_study_are_refused(study, tmp_path):
    out = tmp_path / "presets"
    other_twin = 1 - read_card(study / "runs" / f"{TWINS}-seed0" / "best_student").student_index
    with pytest.raises(ValueError, match=re.escape(f"no peer figures for {TWINS}:")):
        publish(
            study / "runs" / f"{TWINS}-seed0",
            "resnet8_mfef.fashion_mnist_twin0",
            out,
            student=other_twin,
            study_dir=study,
        )
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(study / "runs" / f"{ALONE}-seed0", elsewhere)
    with pytest.raises(ValueError, match="is not a finished run of the study"):
        publish(elsewhere, "resnet8_independent.fashion_mnist_x0", out, study_dir=study)
    no_table = tmp_path / "no-table"
    no_table.mkdir()
    result = _mfef(
        "zoo",
        "publish",
        str(elsewhere),
        "--study",
        str(no_table),
        "--name",
        "resnet8_independent.fashion_mnist_x0",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "has no study.json" in result.stderr
    assert not (out / "resnet8_independent.fashion_mnist_x0").exists()


def _figures(significant: bool, holm: float | None) -> dict:
    return {
        "study": STUDY.name,
        "variant": MIXED,
        "role": "deployed",
        "seeds": 5,
        "test_top1_mean": 92.48,
        "test_top1_ci95": 0.23,
        "baseline": ALONE,
        "diff_vs_baseline_mean": 0.32,
        "diff_vs_baseline_ci95": 0.29,
        "diff_significant": significant,
        "diff_p_holm": holm,
    }


@pytest.mark.parametrize(
    ("significant", "holm", "verdict", "marker"),
    [
        (True, 0.02, "significant, also after the correction across the study's cells: Holm-adjusted p 0.020", "**"),
        (
            True,
            0.163,
            "significant alone, not after the correction across the study's cells: Holm-adjusted p 0.163",
            "*",
        ),
        (False, 0.3, "not significant; Holm-adjusted p 0.300 across the study's cells", ""),
        (True, None, "(95 % CI ±0.29, significant)", "*"),
    ],
)
def test_a_cell_significant_alone_is_not_called_significant_once_the_study_corrected_for_its_cells(
    significant, holm, verdict, marker
):
    # The study's headline rests on the corrected verdict; a card saying plainly "significant" would contradict it.
    from mfef_keras.zoo.commands import _over_seeds
    from mfef_keras.zoo.study_figures import describe

    figures = _figures(significant, holm)
    assert verdict in describe(figures)
    assert _over_seeds({"study": figures})[1] == f"+0.32 ±0.29{marker}"


def test_the_shipped_study_student_carries_the_committed_studys_figures_and_corrected_verdict():
    from mfef_keras.zoo.study_figures import describe

    deployed = _row(MIXED, "deployed")
    figures = read_manifest(ROOT / "zoo" / "manifest.json")["resnet8_mfef.fashion_mnist_studys2"]["study"]
    assert figures["seeds"] == deployed["n"]
    assert figures["diff_p_holm"] == pytest.approx(deployed["diff_vs_independent_p_holm"])
    assert figures["diff_significant"] == deployed["diff_vs_independent_significant"]
    holds = "also after the correction across the study's cells" in describe(figures)
    assert holds == deployed["diff_vs_independent_significant_holm"]
