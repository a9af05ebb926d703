import json
import re

import pytest

from mfef_keras.training.config import TrainConfig
from mfef_keras.training.study import aggregate, format_table, run_study, study_variants


def _fake_train(accuracies, calls):
    """A stand-in for training that writes the summary a real run would, with chosen accuracies."""

    def train(config, echo=print):
        calls.append((config.method, tuple(config.ablate), config.seed))
        base = accuracies[(config.method, tuple(config.ablate))] + config.seed / 100
        summary = {
            "s0": {"best": base, "best_epoch": 1, "last": base - 0.01},
            "s1": {"best": base + 0.02, "best_epoch": 2, "last": base},
            "ensemble": {"best": base + 0.03, "best_epoch": 2, "last": base + 0.02},
        }
        if config.method in ("ffl", "mfef"):
            summary["fused"] = {"best": base + 0.04, "best_epoch": 2, "last": base + 0.03}
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
    assert rows[("dml", "students")]["best_mean"] == pytest.approx(91.0 + 1.5)
    assert rows[("dml", "students")]["n"] == 4
    assert rows[("mfef", "fused")]["best_mean"] == pytest.approx(92.0 + 4 + 0.5)
    assert rows[("mfef", "fused")]["best_std"] == pytest.approx(0.7071, rel=1e-3)
    assert ("independent", "fused") not in rows
    assert rows[("mfef-no_attention", "s0")]["last_mean"] == pytest.approx(91.3 - 1 + 0.5)
    table = (tmp_path / "table.md").read_text()
    assert "| mfef-no_multi_scale-no_attention | students |" in table
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
    rows = aggregate({"mfef": {0: {"s0": {"best": 0.5, "best_epoch": 0, "last": 0.25}}}})
    assert format_table(rows).splitlines()[-1] == "| mfef | s0 | 50.00 ± 0.00 | 25.00 ± 0.00 | 1 |"


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
