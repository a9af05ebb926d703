"""Mixed-size cohorts: building them, fusing maps of different widths, deploying the smallest student, and a
study whose cells train cohorts beside the deployed backbone trained alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfef_keras.distill import OnlineDistiller
from mfef_keras.models import build_students, get_backbone
from mfef_keras.training.config import TrainConfig, resolve_config
from mfef_keras.training.run_directory import summarize
from mfef_keras.training.study import aggregate, run_study, study_variants
from tests.helpers import run_mfef


def test_a_mixed_cohort_builds_one_network_per_name_and_refuses_a_shared_trunk():
    large, small = build_students(["resnet20", "resnet8"], 10, base_width=4)
    assert (large.name, small.name) == ("resnet20_s0", "resnet8_s1")
    assert large.count_params() > 2 * small.count_params()
    with pytest.raises(ValueError, match="shared_trunk.*resnet20,resnet8 mixes backbones"):
        build_students(["resnet20", "resnet8"], 10, topology="shared_trunk")
    with pytest.raises(ValueError, match="names 2 students, but num_students is 3"):
        build_students("resnet20,resnet8", 10, num_students=3)


def test_the_config_takes_one_backbone_per_student_and_counts_them():
    config = TrainConfig(backbone=["resnet20", "resnet8", "resnet8"])
    assert config.backbone == "resnet20,resnet8,resnet8" and config.num_students == 3
    assert config.cohort == ["resnet20", "resnet8", "resnet8"]
    assert "resnet20+resnet8+resnet8" in config.default_run_dir()
    assert TrainConfig(backbone="resnet8", num_students=1, method="independent").cohort == ["resnet8"]
    # A single backbone keeps the experiment it always was.
    assert TrainConfig(backbone="resnet8").experiment_hash() == TrainConfig(backbone=["resnet8"]).experiment_hash()
    with pytest.raises(ValueError, match="names 2 students, but num_students is 4"):
        resolve_config(overrides={"backbone": "resnet20,resnet8", "num_students": 4})
    with pytest.raises(ValueError, match="Unknown backbone 'resnet9'"):
        TrainConfig(backbone="resnet20,resnet9")


@pytest.mark.parametrize("method", ["mfef", "ffl"])
def test_fusion_projects_the_narrower_map_of_a_mixed_cohort_and_trains(method):
    # wrn16_2 ends in twice the channels of resnet8 at the same 8x8 size.
    students = [get_backbone("wrn16_2", 4, base_width=8), get_backbone("resnet8", 4, base_width=8)]
    distiller = OnlineDistiller(students, method=method, rampup_epochs=0)
    layers = {layer.name: layer for layer in distiller.fusion.layers}
    assert "s1_projection" in layers and "s0_projection" not in layers
    assert layers["s1_projection"].filters == students[0].get_layer("features").output.shape[-1]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 32, 32, 3)).astype("float32"), rng.integers(0, 4, size=8)
    distiller.compile(learning_rate=0.05)
    losses = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_a_cohort_whose_maps_differ_in_size_is_refused_naming_both_shapes():
    students = [get_backbone("resnet8", 4, base_width=8), get_backbone("vgg8", 4, base_width=8)]
    with pytest.raises(ValueError, match=r"s0 ends in maps of shape \(8, 8, 32\), student s1 in \(2, 2, \d+\)"):
        OnlineDistiller(students, method="mfef")
    # Methods without a fusion head combine logits only, so any cohort trains.
    assert OnlineDistiller(students, method="dml").fusion is None


def _row(val: float, test: float) -> dict:
    return {"val_acc_s0": val, "test_acc_s0": test}


def test_the_deployed_student_is_the_best_of_the_smallest_even_when_a_larger_one_scores_higher():
    history = [
        {"epoch": 1, "val_acc_s0": 0.95, "test_acc_s0": 0.94, "val_acc_s1": 0.80, "test_acc_s1": 0.79}
        | {"val_acc_s2": 0.85, "test_acc_s2": 0.83, "val_acc_ensemble": 0.9, "test_acc_ensemble": 0.9},
    ]
    summary = summarize(history, 3, has_fused=False, deployable=[1, 2])
    best = summary["best_student"]
    assert best["name"] == "s2" and best["chosen_from"] == ["s1", "s2"]
    assert "fewest parameters" in best["reason"]
    assert summarize(history, 3, has_fused=False)["best_student"]["name"] == "s0"


def _fake_train(calls: list):
    """Writes the summary.json and config.json a run would: the deployed student gains 1 point in a cohort."""

    def train(config, echo=print):
        from pathlib import Path

        from mfef_keras.training.run_directory import write_config

        calls.append((config.method, config.backbone, config.num_students, config.seed))
        acc = 0.80 + config.seed / 100 + (0.01 if config.method != "independent" else 0.0)
        students = {
            f"s{i}": {"best_val": acc, "best_epoch": 1, "test_at_best": acc, "test_last": acc}
            for i in range(config.num_students)
        }
        if config.num_students > 1:
            students["s0"] = dict(students["s0"], test_at_best=0.95, test_last=0.95)
        deployed = f"s{config.num_students - 1}"
        summary = {"selection": "validation", "selection_label": "selected on the validation split", **students}
        summary["ensemble"] = dict(students[deployed])
        summary["best_student"] = {"name": deployed, **students[deployed], "chosen_from": [deployed]}
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        write_config(Path(config.run_dir), config)
        (Path(config.run_dir) / "summary.json").write_text(json.dumps(summary))

    return train


def test_a_cohort_study_pairs_each_deployed_student_with_the_backbone_trained_alone(tmp_path):
    variants = study_variants(["independent", "dml"], False, ["resnet20,resnet8"], "resnet8")
    assert list(variants) == ["independent@resnet8", "dml@resnet20+resnet8"]
    calls = []
    base = TrainConfig(epochs=1, backbone="resnet8")
    result = run_study(
        base,
        ["independent", "dml"],
        [0, 1, 2],
        tmp_path,
        echo=lambda _: None,
        train_fn=_fake_train(calls),
        cohorts=["resnet20,resnet8"],
    )
    assert calls[:2] == [("independent", "resnet8", 1, 0), ("dml", "resnet20,resnet8", 2, 0)]
    rows = {(row["variant"], row["model"]): row for row in result["rows"]}
    deployed = rows["dml@resnet20+resnet8", "deployed"]
    assert deployed["diff_vs_independent_mean"] == pytest.approx(1.0)
    assert rows["dml@resnet20+resnet8", "peer"]["test_at_best_mean"] == pytest.approx(95.0)
    assert rows["independent@resnet8", "deployed"]["diff_vs_independent_mean"] is None
    assert "Δ vs independent@resnet8" in (tmp_path / "table.md").read_text()
    assert json.loads((tmp_path / "study.json").read_text())["cohorts"] == ["resnet20,resnet8"]
    with pytest.raises(ValueError, match="does not hold the deployed backbone 'resnet8'"):
        study_variants(["dml"], False, ["resnet20,resnet20"], "resnet8")


def test_a_resumed_study_refuses_runs_trained_with_other_settings_unless_forced(tmp_path):
    calls = []
    run_study(
        TrainConfig(epochs=1), ["independent", "dml"], [0], tmp_path, echo=lambda _: None, train_fn=_fake_train(calls)
    )
    before = (tmp_path / "runs" / "dml-seed0" / "summary.json").read_bytes()
    with pytest.raises(ValueError, match=r"2 runs of this study.*dml-seed0 \(differs in: epochs, temperature\)"):
        run_study(
            TrainConfig(epochs=2, temperature=4.0),
            ["independent", "dml"],
            [0],
            tmp_path,
            echo=lambda _: None,
            train_fn=_fake_train(calls),
        )
    assert len(calls) == 2 and (tmp_path / "runs" / "dml-seed0" / "summary.json").read_bytes() == before
    run_study(
        TrainConfig(epochs=2, temperature=4.0),
        ["independent", "dml"],
        [0],
        tmp_path,
        echo=lambda _: None,
        train_fn=_fake_train(calls),
        force=True,
    )
    assert len(calls) == 4
    aggregate_rows = aggregate({"dml": {0: json.loads((tmp_path / "runs" / "dml-seed0" / "summary.json").read_text())}})
    assert {row["model"] for row in aggregate_rows} >= {"deployed", "students"}


def test_training_a_mixed_cohort_deploys_the_small_student_which_eval_scores_in_another_process(tmp_path):
    run_dir = tmp_path / "run"
    done = run_mfef(
        "train",
        "--backbone",
        "resnet20,resnet8",
        "--method",
        "dml",
        "--epochs",
        "1",
        "--base-width",
        "4",
        "--train-limit",
        "128",
        "--batch-size",
        "64",
        "--no-progress",
        "--run-dir",
        str(run_dir),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((run_dir / "best_student" / "metadata.json").read_text())
    assert card["backbone"] == "resnet8" and card["student_index"] == 1
    assert [entry["backbone"] for entry in card["cohort"]] == ["resnet20", "resnet8"]
    assert card["cohort"][0]["parameters"] > card["cohort"][1]["parameters"]
    assert card["deployed"]["chosen_from"] == ["s1"] and "fewest parameters" in card["deployed"]["reason"]
    assert json.loads((run_dir / "students" / "s0" / "metadata.json").read_text())["backbone"] == "resnet20"
    evaluated = run_mfef("eval", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    # The deployed student, scored from its own files: the run's recorded test top-1 to rounding.
    assert "digits test (360 images): top-1" in evaluated.stdout
    scored = json.loads((run_dir / "best_student" / "eval" / "metrics.json").read_text())
    assert scored["top1"] == pytest.approx(card["test_accuracy"], abs=1e-6)
    refused = run_mfef("train", "--backbone", "resnet20,resnet8", "--students", "3", "--run-dir", str(tmp_path / "r2"))
    assert refused.returncode != 0 and "names 2 students, but num_students is 3" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "r2").exists()


def test_a_study_tabulates_the_runs_finished_so_far_without_training(tmp_path):
    calls = []
    base = TrainConfig(epochs=1, backbone="resnet8")
    cohorts = ["resnet20,resnet8"]
    run_study(
        base,
        ["independent", "dml"],
        [0, 1],
        tmp_path,
        echo=lambda _: None,
        train_fn=_fake_train(calls),
        cohorts=cohorts,
    )
    lines = []
    result = run_study(
        base,
        ["independent", "dml", "mfef"],
        [0, 1, 2],
        tmp_path,
        echo=lines.append,
        train_fn=_fake_train(calls),
        cohorts=cohorts,
        train=False,
    )
    assert len(calls) == 4, "nothing more was trained"
    assert sum("not finished, left out of the table" in line for line in lines) == 5
    assert set(result["runs"]) == {"independent@resnet8", "dml@resnet20+resnet8"}
    assert set(result["runs"]["dml@resnet20+resnet8"]) == {0, 1}
    assert (tmp_path / "table.md").exists() and (tmp_path / "comparison.png").exists()
    with pytest.raises(ValueError, match="No run of the study"):
        run_study(base, ["ffl"], [0], tmp_path / "empty", echo=lambda _: None, cohorts=cohorts, train=False)
