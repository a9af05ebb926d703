"""The README's table of the Fashion-MNIST comparison study is the committed study's `study.json`, figure for figure.

The table is written by hand from `mfef study --no-train`'s output; a run committed without updating it, or a
figure copied wrong, would make the README claim what the study does not say.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mfef_keras.training.study import _difference_cell

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "study-fashion-mnist-compressed"
HEADER = "| cell | seeds | deployed resnet8 (%) |"


def _readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index(HEADER) :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[re.match(r"`([^`]+)`", cells[0]).group(1)] = cells
    return rows


def _study_rows() -> dict[tuple[str, str], dict]:
    rows = json.loads((STUDY / "study.json").read_text())["rows"]
    return {(row["variant"], row["model"]): row for row in rows}


README_ROWS = _readme_rows()


def test_the_readme_table_has_every_cell_of_the_study_once():
    variants = list(dict.fromkeys(variant for variant, _ in _study_rows()))
    assert list(README_ROWS) == variants


@pytest.mark.parametrize("variant", list(README_ROWS))
def test_each_readme_row_states_the_studys_figures(variant):
    study = _study_rows()
    cells = README_ROWS[variant]
    deployed = study[(variant, "deployed")]
    assert int(cells[1]) == deployed["n"]
    assert cells[2] == f"{deployed['test_at_best_mean']:.2f}"
    if variant.startswith("independent@"):
        return
    assert cells[3] == _difference_cell(deployed)
    assert cells[4] == f"{deployed['diff_vs_independent_p_holm']:.2f}"
    peer, fused = study.get((variant, "peer")), study.get((variant, "fused"))
    assert cells[5] == ("—" if peer is None else f"{peer['test_at_best_mean']:.2f}")
    assert cells[6] == ("—" if fused is None else f"{fused['test_at_best_mean']:.2f}")
    assert cells[7] == ("—" if fused is None else _difference_cell(fused))
