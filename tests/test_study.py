import json
import re

import pytest

from mfef_keras.training.config import TrainConfig
from mfef_keras.training.study import (
    aggregate,
    format_table,
    run_study,
    study_setting,
    study_variants,
    t_interval,
)


def _model(at_best: float, epoch: int, last: float) -> dict:
    """A model's entry in summary.json: selected on validation, with its test top-1 there and at the end."""
    return {"best_val": at_best + 0.01, "best_epoch": epoch, "test_at_best": at_best, "test_last": last}


def _summary(**models: dict) -> dict:
    return {"selection": "validation", "selection_label": "selected on the validation split", **models}


def _fake_train(accuracies, calls):
    """A stand-in for training that writes the summary a real run would, with chosen accuracies."""

    def train(config, echo=print):
        calls.append((config.method, tuple(config.ablate), config.seed))
        base = accuracies[(config.method, tuple(config.ablate))] + config.seed / 100
        summary = _summary(
            s0=_model(base, 1, base - 0.01),
            s1=_model(base + 0.02, 2, base),
            ensemble=_model(base + 0.03, 2, base + 0.02),
        )
        if config.method in ("ffl", "mfef"):
            summary["fused"] = _model(base + 0.04, 2, base + 0.03)
        from pathlib import Path

        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.run_dir) / "summary.json").write_text(json.dumps(summary))

    return train


ACC = {
    ("independent", ()): 0.90,
    ("dml", ()): 0.91,
    ("mfef", ()): 0.92,
    ("mfef", ("multi_scale",)): 0.915,
    ("mfef", ("attention",)): 0.913,
    ("mfef", ("multi_scale", "attention")): 0.911,
}


def test_study_runs_every_variant_and_seed_and_aggregates(tmp_path):
    calls = []
    result = run_study(
        TrainConfig(epochs=1),
        ["independent", "dml", "mfef"],
        [0, 1],
        tmp_path,
        ablation=True,
        echo=lambda _: None,
        train_fn=_fake_train(ACC, calls),
    )
    assert len(calls) == 6 * 2 and {c[2] for c in calls} == {0, 1}
    rows = {(r["variant"], r["model"]): r for r in result["rows"]}
    # students row: s0 and s1 of both seeds -> mean of (b, b+2, b+1, b+3) points
    assert rows[("dml", "students")]["test_at_best_mean"] == pytest.approx(91.0 + 1.5)
    assert rows[("dml", "students")]["n"] == 4
    assert rows[("mfef", "fused")]["test_at_best_mean"] == pytest.approx(92.0 + 4 + 0.5)
    assert rows[("mfef", "fused")]["test_at_best_std"] == pytest.approx(0.7071, rel=1e-3)
    assert ("independent", "fused") not in rows
    assert rows[("mfef-no_attention", "s0")]["test_last_mean"] == pytest.approx(91.3 - 1 + 0.5)
    assert rows[("mfef", "s0")]["selection"] == "validation"
    table = (tmp_path / "table.md").read_text()
    assert "| mfef-no_multi_scale-no_attention | students |" in table
    assert "test top-1 at selected epoch (%) | test top-1 at last epoch (%)" in table
    assert table.rstrip().endswith("Epochs selected on the validation split.")
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert json.loads((tmp_path / "study.json").read_text())["seeds"] == [0, 1]


def test_interrupted_study_skips_finished_runs(tmp_path):
    calls = []
    train = _fake_train(ACC, calls)
    run_study(TrainConfig(epochs=1), ["independent"], [0], tmp_path, echo=lambda _: None, train_fn=train)
    calls.clear()
    run_study(TrainConfig(epochs=1), ["independent", "dml"], [0, 1], tmp_path, echo=lambda _: None, train_fn=train)
    assert sorted(calls) == [("dml", (), 0), ("dml", (), 1), ("independent", (), 1)]


def test_table_format():
    rows = aggregate({"mfef": {0: _summary(s0=_model(0.5, 1, 0.25))}})
    lines = format_table(rows).splitlines()
    assert lines[-3] == "| mfef | s0 | 50.00 ± 0.00 | 25.00 ± 0.00 | 1 |"
    assert lines[-1] == "Epochs selected on the validation split."


def test_a_study_selected_on_test_says_so():
    papers = {**_summary(s0=_model(0.5, 1, 0.25)), "selection": "test"}
    assert format_table(aggregate({"mfef": {0: papers}})).splitlines()[-1] == (
        "Epochs selected on the test split (papers' protocol)."
    )


def test_unknown_method_in_a_study():
    with pytest.raises(ValueError, match="Unknown method 'mfeff'"):
        study_variants(["mfeff"], ablation=False)


def test_a_study_without_methods_or_with_a_file_as_folder_is_refused_before_training(tmp_path):
    calls = []
    train = _fake_train(ACC, calls)
    with pytest.raises(ValueError, match="No method to study: --methods needs one or more of dml, ffl, independent"):
        run_study(TrainConfig(epochs=1), [], [0], tmp_path / "study", train_fn=train)
    (tmp_path / "file").write_text("x")
    message = f"--out {tmp_path / 'file' / 'study'} is not a directory (its parent {tmp_path / 'file'} is a file)"
    with pytest.raises(ValueError, match=re.escape(message)):
        run_study(TrainConfig(epochs=1), ["dml"], [0], tmp_path / "file" / "study", train_fn=train)
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _rows_at(accuracy: float) -> list[dict]:
    """Aggregated rows of a 2-seed study whose every model reached ``accuracy`` (a fraction)."""
    summary = _summary(s0=_model(accuracy, 1, accuracy))
    return aggregate({"dml": {0: summary, 1: summary}})


def test_table_marks_chance_level_results_with_a_footnote():
    at_chance = format_table(_rows_at(0.10), num_classes=10).splitlines()
    assert at_chance[2] == "| dml | students | 10.00 ± 0.00 † | 10.00 ± 0.00 † | 2 |"
    assert at_chance[-1].startswith("† Within 5 points of chance (10 classes: 10.0 %)")
    learned = format_table(_rows_at(0.95), num_classes=10)
    assert "†" not in learned and "chance" not in learned
    # 10 % is far above chance for 100 classes
    assert "†" not in format_table(_rows_at(0.10), num_classes=100)


def test_a_study_of_runs_at_chance_says_so_and_titles_its_chart_with_the_setting(tmp_path, monkeypatch):
    import mfef_keras.training.study as study

    fake = _fake_train({("dml", ()): 0.08}, [])

    def train(config, echo=print):
        fake(config, echo)
        (tmp_path / "runs" / f"dml-seed{config.seed}" / "data.json").write_text(
            json.dumps({"class_names": list("abcdefghij")})
        )

    titles = []
    monkeypatch.setattr(study, "plot_study", lambda rows, path, setting: titles.append(setting))
    result = run_study(
        TrainConfig(epochs=3, dataset="digits"), ["dml"], [0, 1], tmp_path, echo=lambda _: None, train_fn=train
    )
    assert "| dml | students | 9.50 ± 1.29 † |" in result["table"]
    assert (tmp_path / "table.md").read_text().rstrip().endswith("check the labels.")
    assert titles == ["digits · resnet8 · 2 students · 3 epochs · 2 seeds (0, 1)"]


def test_study_setting_names_what_the_numbers_hold_for():
    config = TrainConfig(dataset="cifar10", backbone="resnet32", base_width=8, epochs=200, train_limit=5000)
    assert (
        study_setting(config, [0])
        == "cifar10 (5000 training images) · resnet32 (width 8) · 2 students · 200 epochs · 1 seed (0)"
    )


def test_rows_carry_the_95_percent_t_interval_over_seeds():
    # mean 2, sd 1, n 3: t(0.975, 2) = 4.3027 -> 4.3027 / sqrt(3)
    assert t_interval([1.0, 2.0, 3.0]) == pytest.approx(2.4841, abs=1e-4)
    assert t_interval([1.0]) is None
    summaries = {
        "dml": {
            seed: _summary(s0=_model(best, 1, best), s1=_model(best + 0.02, 1, best))
            for seed, best in ((0, 0.90), (1, 0.91), (2, 0.92))
        }
    }
    rows = {row["model"]: row for row in aggregate(summaries)}
    # the students of a seed are averaged first: the interval is over 3 seeds, not 6 students
    assert rows["students"]["test_at_best_ci95"] == pytest.approx(2.4841, abs=1e-4)
    assert rows["s0"]["test_at_best_ci95"] == pytest.approx(2.4841, abs=1e-4)


def test_study_tells_each_run_with_its_number_and_an_eta_once_a_run_is_timed(tmp_path):
    lines = []
    train = _fake_train(ACC, [])
    run_study(TrainConfig(epochs=1), ["independent"], [0], tmp_path, echo=lines.append, train_fn=train)
    lines.clear()
    run_study(TrainConfig(epochs=1), ["independent", "dml"], [0, 1], tmp_path, echo=lines.append, train_fn=train)
    runs = [line for line in lines if line.startswith("[study] run ")]
    assert [line.split(":")[0] for line in runs] == [f"[study] run {k}/4" for k in range(1, 5)]
    assert runs[0] == "[study] run 1/4: independent seed 0: finished earlier, skipped"
    # No run timed yet: no ETA; then one for the runs left, this one included.
    assert runs[1].startswith("[study] run 2/4: independent seed 1, training in ") and "ETA" not in runs[1]
    assert re.fullmatch(r"\[study\] run 3/4: dml seed 0, training in .*dml-seed0 \(ETA \d+s\)", runs[2]), runs[2]
    assert runs[3].startswith("[study] run 4/4: dml seed 1, training in ") and runs[3].endswith("s)")
