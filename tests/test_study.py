import json
import re

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import stats

from mfef_keras.training.config import TrainConfig
from mfef_keras.training.study import (
    PAIRING_FOOTNOTE,
    aggregate,
    format_table,
    run_study,
    study_setting,
    study_variants,
    t_interval,
)
from tests.helpers import one_error_line, run_mfef


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
        # Two epochs of 30 s and 60 s, times (seed + 1): 1.5 minutes for seed 0, 3 for seed 1.
        epochs = [{"epoch": 1, "time_s": 30.0 * (config.seed + 1)}, {"epoch": 2, "time_s": 60.0 * (config.seed + 1)}]
        (Path(config.run_dir) / "metrics.json").write_text(json.dumps({"epochs": epochs}))

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
    assert "test top-1 at selected epoch (%) | 95 % CI of the mean (%) | Δ vs independent" in table
    assert "\nEpochs selected on the validation split.\n" in table
    assert PAIRING_FOOTNOTE in table
    # Each variant's training time per run, over its seeds: 1.5 and 3 minutes.
    assert "\n| dml | 2 | 2.2 (1.5, 3.0) |\n" in table
    assert json.loads((tmp_path / "study.json").read_text())["training_minutes"]["dml"] == {"0": 1.5, "1": 3.0}
    # With paired differences to show, the chart has its second panel: 13 inches at 100 dpi.
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    assert imread(tmp_path / "comparison.png").shape[1] == 1300
    assert json.loads((tmp_path / "study.json").read_text())["seeds"] == [0, 1]
    # These runs recorded no test top-1 per epoch: no convergence table or figure to make of them.
    assert "Convergence" not in table and not (tmp_path / "convergence.png").exists()


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
    assert lines[-3] == "| mfef | s0 | 50.00 ± 0.00 | — | 25.00 ± 0.00 | 1 |"
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
    with pytest.raises(ValueError, match="No method to study: --methods needs one or more of independent, dml, ffl"):
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
    assert at_chance[2] == "| dml | students | 10.00 ± 0.00 † | [10.00, 10.00] | 10.00 ± 0.00 † | 2 |"
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
    assert "Train longer, lower the learning rate or check the labels.\n" in (tmp_path / "table.md").read_text()
    assert titles == ["digits · resnet8 · 2 students · 3 epochs · 2 seeds (0, 1)"]
    # Tabulated with a third seed planned and not trained: the title says how far the study is.
    run_study(TrainConfig(epochs=3, dataset="digits"), ["dml"], [0, 1, 2], tmp_path, echo=lambda _: None, train=False)
    assert titles[-1].endswith(" · 3 seeds (0, 1, 2) · in progress: 2 of 3 runs finished")


def test_study_setting_names_what_the_numbers_hold_for():
    config = TrainConfig(dataset="cifar10", backbone="resnet32", base_width=8, epochs=200, train_limit=5000)
    assert (
        study_setting(config, [0])
        == "cifar10 (5000 training images) · resnet32 (width 8) · 2 students · 200 epochs · 1 seed (0)"
    )
    assert study_setting(TrainConfig(epochs=1), [0, 1]).endswith(" · 1 epoch · 2 seeds (0, 1)")
    unfinished = study_setting(TrainConfig(epochs=1), [0, 1], runs=(3, 4))
    assert unfinished.endswith(" · 2 seeds (0, 1) · in progress: 3 of 4 runs finished")


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
    # Seed by seed: a study stopped early has every variant of the seeds it finished.
    assert runs[1].startswith("[study] run 2/4: dml seed 0, training in ") and "ETA" not in runs[1]
    assert re.fullmatch(
        r"\[study\] run 3/4: independent seed 1, training in .*independent-seed1 \(ETA \d+s\)", runs[2]
    ), runs[2]
    assert runs[3].startswith("[study] run 4/4: dml seed 1, training in ") and runs[3].endswith("s)")


def _paired_study(independent: dict[int, float], others: dict[str, dict[int, float]]) -> dict:
    """Summaries of 2-student runs: per variant and seed, s0 at ``acc``, s1 at ``acc`` + 2 points, ensemble + 3
    and, for mfef, fused + 4 (fractions, like summary.json)."""

    def run(variant: str, acc: float) -> dict:
        summary = _summary(s0=_model(acc, 1, acc), s1=_model(acc + 0.02, 1, acc), ensemble=_model(acc + 0.03, 1, acc))
        if variant == "mfef":
            summary["fused"] = _model(acc + 0.04, 1, acc)
        return summary

    return {
        variant: {seed: run(variant, acc) for seed, acc in by_seed.items()}
        for variant, by_seed in {"independent": independent, **others}.items()
    }


def _expected_paired(own: list[float], baseline: list[float]) -> tuple[float, float, bool]:
    """Mean difference in points, half-width of its 95 % t-interval and significance, by numpy and scipy."""
    diffs = 100 * (np.asarray(own) - np.asarray(baseline))
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    # The interval excludes zero exactly when the paired t-test rejects at 5 %.
    significant = bool(stats.ttest_rel(own, baseline).pvalue < 0.05)
    return diffs.mean(), (high - low) / 2, significant


def test_paired_differences_to_independent_over_the_seeds_both_ran():
    independent = {0: 0.80, 1: 0.86, 2: 0.83, 3: 0.90}
    # dml never ran seed 3: only seeds 0-2 pair up.
    study = _paired_study(
        independent, {"dml": {0: 0.81, 1: 0.872, 2: 0.842}, "mfef": {0: 0.79, 1: 0.87, 2: 0.84, 3: 0.9}}
    )
    rows = {(r["variant"], r["model"]): r for r in aggregate(study)}
    base = [independent[seed] for seed in (0, 1, 2)]
    # students of a seed average to acc + 1 point on both sides: their difference is that of s0
    mean, half, significant = _expected_paired([0.81, 0.872, 0.842], base)
    assert rows["dml", "students"]["diff_vs_independent_mean"] == pytest.approx(mean)
    assert rows["dml", "students"]["diff_vs_independent_ci95"] == pytest.approx(half)
    assert rows["dml", "students"]["diff_vs_independent_significant"] is significant is True
    # mfef's ensemble is 3 points above its s0 like independent's; its fused head 4 points, against that ensemble
    mfef = [0.79, 0.87, 0.84, 0.9]
    mean, half, significant = _expected_paired(mfef, list(independent.values()))
    assert rows["mfef", "ensemble"]["diff_vs_independent_mean"] == pytest.approx(mean)
    assert rows["mfef", "ensemble"]["diff_vs_independent_ci95"] == pytest.approx(half)
    fused = [acc + 0.04 for acc in mfef]
    mean, half, significant = _expected_paired(fused, [acc + 0.03 for acc in independent.values()])
    assert rows["mfef", "fused"]["diff_vs_independent_mean"] == pytest.approx(mean)
    assert rows["mfef", "fused"]["diff_vs_independent_ci95"] == pytest.approx(half)
    assert rows["mfef", "fused"]["diff_vs_independent_significant"] is significant is False
    not_paired = [key for key, row in rows.items() if row["diff_vs_independent_mean"] is None]
    assert sorted(not_paired) == sorted(
        [("independent", m) for m in ("students", "s0", "s1", "ensemble")]
        + [(v, m) for v in ("dml", "mfef") for m in ("s0", "s1")]
    )
    assert all(rows[key]["diff_vs_independent_significant"] is None for key in not_paired)


def test_pairing_tells_apart_methods_whose_unpaired_intervals_overlap():
    # Seeds differ by up to 10 points; the method is 0.5 to 0.7 points better on every one of them.
    independent = {0: 0.80, 1: 0.90, 2: 0.85, 3: 0.88}
    dml = {0: 0.805, 1: 0.907, 2: 0.856, 3: 0.885}
    rows = {(r["variant"], r["model"]): r for r in aggregate(_paired_study(independent, {"dml": dml}))}
    base, own = rows["independent", "students"], rows["dml", "students"]
    assert own["test_at_best_mean"] - own["test_at_best_ci95"] < base["test_at_best_mean"] + base["test_at_best_ci95"]
    assert stats.ttest_ind(list(dml.values()), list(independent.values())).pvalue > 0.5
    assert own["diff_vs_independent_significant"] is True
    assert own["diff_vs_independent_mean"] - own["diff_vs_independent_ci95"] > 0
    mean, half, _ = _expected_paired(list(dml.values()), list(independent.values()))
    assert (own["diff_vs_independent_mean"], own["diff_vs_independent_ci95"]) == pytest.approx((mean, half))


def test_no_paired_difference_without_independent_or_with_one_seed_in_common():
    no_baseline = _paired_study({}, {"dml": {0: 0.8, 1: 0.9}})
    del no_baseline["independent"]
    one_common = _paired_study({0: 0.8, 1: 0.9}, {"dml": {1: 0.91, 2: 0.85}})
    for study in (no_baseline, one_common):
        assert all(row["diff_vs_independent_mean"] is None for row in aggregate(study))
        assert all(row["diff_vs_independent_ci95"] is None for row in aggregate(study))


def test_table_shows_the_paired_difference_starred_when_its_interval_excludes_zero():
    independent = {0: 0.80, 1: 0.90, 2: 0.85}
    # dml: +1, +1.2, +0.8 points, significant; mfef: +1, -1, +0.5, not
    study = _paired_study(independent, {"dml": {0: 0.81, 1: 0.912, 2: 0.858}, "mfef": {0: 0.81, 1: 0.89, 2: 0.855}})
    rows = aggregate(study)
    lines = format_table(rows).splitlines()
    assert lines[0] == (
        "| method | model | test top-1 at selected epoch (%) | 95 % CI of the mean (%) | "
        "Δ vs independent, 95 % CI (points) | test top-1 at last epoch (%) | n |"
    )
    cells = {tuple(line.split(" | ")[:2]): line.split(" | ")[4] for line in lines[2 : 2 + len(rows)]}
    half = stats.t.ppf(0.975, 2) * np.std([1.0, 1.2, 0.8], ddof=1) / np.sqrt(3)
    assert cells["| dml", "students"] == f"+1.00 [{1 - half:+.2f}, {1 + half:+.2f}] *"
    assert 1 - half > 0
    mean, half, significant = _expected_paired([0.81, 0.89, 0.855], list(independent.values()))
    assert not significant
    assert cells["| mfef", "students"] == f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"
    assert cells["| independent", "students"] == cells["| dml", "s0"] == "—"
    students = next(r for r in rows if (r["variant"], r["model"]) == ("independent", "students"))
    # the mean's interval is over the 3 seeds (students averaged within each), its std over the 6 students
    low, high = stats.t.interval(0.95, 2, loc=86.0, scale=stats.sem([81.0, 91.0, 86.0]))
    std = np.std([80.0, 82.0, 90.0, 92.0, 85.0, 87.0], ddof=1)
    assert students["test_at_best_mean"] == pytest.approx(86.0)
    expected = f"| independent | students | 86.00 ± {std:.2f} | [{low:.2f}, {high:.2f}] | — |"
    assert lines[2].startswith(expected)
    assert lines[-1] == PAIRING_FOOTNOTE
    assert "same data order, and the same initial students within one cohort" in PAIRING_FOOTNOTE
    assert "* the interval excludes 0" in PAIRING_FOOTNOTE
    # no baseline, no Δ column
    without = format_table([row for row in rows if row["variant"] != "independent"])
    assert "Δ" not in without and without.rstrip().endswith("Epochs selected on the validation split.")


OLD_SUMMARY = {
    # summary.json as mfef wrote it before selecting epochs on a validation split
    "s0": {"best": 0.93, "best_epoch": 12, "last": 0.92},
    "s1": {"best": 0.94, "best_epoch": 20, "last": 0.94},
    "ensemble": {"best": 0.95, "best_epoch": 20, "last": 0.95},
    "best_student": {"name": "s1", "best": 0.94, "best_epoch": 20, "last": 0.94},
}


def test_a_study_folder_with_runs_of_an_older_mfef_is_refused_before_training(tmp_path):
    old_run = tmp_path / "runs" / "dml-seed1"
    old_run.mkdir(parents=True)
    (old_run / "summary.json").write_text(json.dumps(OLD_SUMMARY))
    calls = []
    message = (
        f"The run {old_run} was trained by an older mfef: its summary.json has no validation-selected results "
        "(no 'selection', no 'test_at_best'). Delete that run directory to train it again, "
        "or give the study a new --out."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        run_study(
            TrainConfig(epochs=1),
            ["independent", "dml"],
            [0, 1],
            tmp_path,
            echo=lambda _: None,
            train_fn=_fake_train(ACC, calls),
        )
    assert calls == []
    with pytest.raises(ValueError, match="^The dml run with seed 1 was trained by an older mfef"):
        aggregate({"dml": {0: _summary(s0=_model(0.9, 1, 0.9)), 1: OLD_SUMMARY}})


def test_a_study_from_a_first_seed_trains_and_pairs_only_those_seeds(tmp_path):
    """A confirmatory study on fresh seeds: `--first-seed 3 --seeds 2` trains seeds 3 and 4, in their own process."""
    out = tmp_path / "study"
    tiny = ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--base-width", "4", "--no-progress"]
    result = run_mfef("study", *tiny, "--methods", "independent", "--seeds", "2", "--first-seed", "3", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (out / "runs").iterdir() if path.is_dir()) == [
        "independent-seed3",
        "independent-seed4",
    ]
    for seed in (3, 4):
        assert (
            json.loads((out / "runs" / f"independent-seed{seed}" / "config.json").read_text())["config"]["seed"] == seed
        )
    assert json.loads((out / "study.json").read_text())["seeds"] == [3, 4]
    assert (
        (out / "table.md")
        .read_text()
        .startswith(
            "Setting: digits (64 training images) · resnet8 (width 4) · 2 students · 1 epoch · 2 seeds (3, 4).\n"
        )
    )

    refused = run_mfef("study", *tiny, "--methods", "independent", "--first-seed", "-1", "--out", tmp_path / "other")
    assert "--first-seed" in one_error_line(refused, "must be >= 0, got -1")
    assert not (tmp_path / "other").exists()
