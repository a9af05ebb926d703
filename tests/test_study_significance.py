import json

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.image import imread
from scipy import stats

from mfef_keras.training.config import TrainConfig
from mfef_keras.training.plots import verdict_figure
from mfef_keras.training.study import aggregate, run_study, t_interval
from mfef_keras.training.study_significance import format_corrected, holm_adjusted, paired_p_value


def test_paired_p_value_is_scipys_paired_t_test_and_agrees_with_the_interval():
    rng = np.random.default_rng(0)
    for _ in range(50):
        baseline = rng.normal(90, 1, 5)
        own = baseline + rng.normal(0.3, 0.4, 5)
        diffs = list(own - baseline)
        p = paired_p_value(diffs)
        assert p == pytest.approx(stats.ttest_rel(own, baseline).pvalue)
        assert (p < 0.05) is bool(abs(np.mean(diffs)) > t_interval(diffs))


def test_paired_p_value_of_identical_differences_and_of_one_seed():
    assert paired_p_value([0.4, 0.4, 0.4]) == 0.0
    assert paired_p_value([0.0, 0.0]) == 1.0
    assert paired_p_value([0.4]) is None


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_and_keeps_the_order():
    adjusted = holm_adjusted({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": 0.5})
    # sorted: d 0.005*5, a 0.01*4, c 0.03*3, b 0.04*2 -> 0.08 raised to c's 0.09, e 0.5*1 -> 0.5
    assert adjusted == pytest.approx({"d": 0.025, "a": 0.04, "c": 0.09, "b": 0.09, "e": 0.5})
    assert holm_adjusted({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}
    assert holm_adjusted({}) == {}


def _run(acc: float, deployed: float) -> dict:
    """A 2-student summary whose deployed student (s0) has test top-1 ``deployed``."""
    model = {"best_val": acc, "best_epoch": 1, "test_at_best": acc, "test_last": acc}
    return {
        "selection": "validation",
        "s0": {**model, "test_at_best": deployed},
        "s1": model,
        "ensemble": model,
        "best_student": {**model, "name": "s0", "chosen_from": ["s0"], "test_at_best": deployed},
    }


# Deployed test top-1 per seed: "one" beats the baseline by about +0.4 points every seed, "dml" by noise only,
# "kdcl" loses about 0.3 every seed; three cells, so Holm multiplies the smallest p-value by 3.
DEPLOYED = {
    "independent": [0.900, 0.905, 0.898, 0.902, 0.901],
    "one": [0.9041, 0.9088, 0.9021, 0.9062, 0.9049],
    "dml": [0.902, 0.903, 0.899, 0.904, 0.899],
    "kdcl": [0.8975, 0.9015, 0.8948, 0.8993, 0.8982],
}


def _study() -> dict:
    return {variant: {seed: _run(0.9, acc) for seed, acc in enumerate(accs)} for variant, accs in DEPLOYED.items()}


def test_the_deployed_rows_are_corrected_together_and_no_other_row_is():
    rows = aggregate(_study())
    deployed = {row["variant"]: row for row in rows if row["model"] == "deployed"}
    raw = {}
    for variant in ("one", "dml", "kdcl"):
        own, base = np.asarray(DEPLOYED[variant]), np.asarray(DEPLOYED["independent"])
        raw[variant] = stats.ttest_rel(own, base).pvalue
        assert deployed[variant]["diff_vs_independent_p"] == pytest.approx(raw[variant])
    expected = holm_adjusted(raw)
    for variant in raw:
        assert deployed[variant]["diff_vs_independent_p_holm"] == pytest.approx(expected[variant])
        assert deployed[variant]["diff_vs_independent_p_holm"] >= deployed[variant]["diff_vs_independent_p"]
        assert deployed[variant]["diff_vs_independent_significant_holm"] is bool(expected[variant] < 0.05)
    assert deployed["one"]["diff_vs_independent_significant_holm"] is True
    assert deployed["dml"]["diff_vs_independent_significant_holm"] is False
    assert deployed["independent"]["diff_vs_independent_p_holm"] is None
    others = [row for row in rows if row["model"] != "deployed"]
    assert all(row["diff_vs_independent_p_holm"] is None for row in others)
    # The students rows have paired p-values too, but are not in the family.
    assert any(row["diff_vs_independent_p"] is not None for row in others)


def test_the_corrected_table_gives_each_cell_its_verdict():
    table = format_corrected(aggregate(_study()), "independent")
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "across the 3 cells" in table
    assert lines["one"].endswith("| yes |")
    assert lines["dml"].endswith("| not established |")
    assert lines["kdcl"].endswith("| no: below it |")
    assert "independent" not in lines


def test_one_cell_has_nothing_to_correct_for():
    study = {variant: by_seed for variant, by_seed in _study().items() if variant in ("independent", "one")}
    assert format_corrected(aggregate(study), "independent") == ""
    with pytest.raises(ValueError, match="nothing to draw"):
        verdict_figure(aggregate(study), "setting", "independent")


def test_the_verdict_figure_fills_the_cells_that_hold_after_correction():
    rows = aggregate(_study())
    figure = verdict_figure(rows, "fashion_mnist · 5 seeds", "independent")
    axis = figure.axes[0]
    assert [label.get_text() for label in axis.get_yticklabels()] == ["one", "dml", "kdcl"]
    dots = [line for line in axis.lines if line.get_marker() == "o"]
    filled = [to_rgba(line.get_markerfacecolor()) != to_rgba("white") for line in dots]
    assert filled == [True, False, True]
    deployed = {row["variant"]: row for row in rows if row["model"] == "deployed"}
    texts = [text.get_text() for text in axis.texts]
    one = deployed["one"]
    low, high = (one["diff_vs_independent_mean"] + sign * one["diff_vs_independent_ci95"] for sign in (-1, 1))
    assert texts[0] == f"+0.40 [{low:+.2f}, {high:+.2f}] · Holm p {one['diff_vs_independent_p_holm']:.2f} · 5 seeds"
    assert [dot.get_xdata()[0] for dot in dots] == pytest.approx(
        [deployed[v]["diff_vs_independent_mean"] for v in ("one", "dml", "kdcl")]
    )


def test_run_study_writes_the_corrected_table_and_the_adjusted_p_values(tmp_path):
    def train(config, echo=print):
        config_dir = tmp_path / "out" / "runs" / f"{config.method}-seed{config.seed}"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "summary.json").write_text(json.dumps(_run(0.9, DEPLOYED[config.method][config.seed])))

    result = run_study(
        TrainConfig(epochs=1, batch_size=8),
        ["independent", "one", "dml"],
        seeds=range(5),
        out_dir=tmp_path / "out",
        train_fn=train,
        echo=lambda line: None,
    )
    assert "| one | +0.40 |" in (tmp_path / "out" / "table.md").read_text()
    # The stand-in trainer records no epochs: no convergence figure, and none claimed.
    assert [path.name for path in result["figures"]] == ["comparison.png", "verdict.png"]
    # Two cells, one line each: 1.8 + 2 x 0.42 inches high, 10 wide, at 100 dpi.
    assert imread(tmp_path / "out" / "verdict.png").shape[:2] == (264, 1000)
    rows = json.loads((tmp_path / "out" / "study.json").read_text())["rows"]
    one = next(row for row in rows if row["variant"] == "one" and row["model"] == "deployed")
    assert one["diff_vs_independent_significant_holm"] is True
    assert 0 < one["diff_vs_independent_p"] < one["diff_vs_independent_p_holm"] < 0.05
