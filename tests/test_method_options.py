"""Each method's own hyper-parameters: declared with defaults in its class, set from the library, the config
and `mfef train --method-option`, recorded in config.json, and runs trained before options existed unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from mfef_keras.distill import OnlineDistiller, list_methods, method_class
from mfef_keras.models import build_students
from mfef_keras.training.config import TrainConfig, resolve_config
from mfef_keras.training.run_directory import config_differences
from tests.helpers import one_error_line, run_mfef

STUDY_RUNS = Path(__file__).resolve().parent.parent / "docs" / "study-fashion-mnist-compressed" / "runs"


def test_methods_declare_the_hyper_parameters_their_papers_set():
    assert method_class("pcl").option_defaults() == {"ema_decay": 0.999}
    assert method_class("mfef").option_defaults() == {"splits": 4, "reduction": 8, "kernel_size": 7}
    assert method_class("okddip").option_defaults() == {"projection_factor": 8}
    assert method_class("dml").option_defaults() == {}
    # Every declared default passes its own check.
    for name in list_methods():
        method = method_class(name)
        assert method.checked_options(method.option_defaults()) == method.option_defaults()


def test_pcl_moves_its_temporal_means_at_the_given_ema_decay():
    students = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    averages = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = [w.copy() for w in averages.get_weights()]
    pcl = method_class("pcl")(ema_decay=0.5)
    # Past the first 1 / (1 - a) steps the decay is a itself.
    pcl.update_averages(averages, students, keras.ops.convert_to_tensor(100))
    for old, new, target in zip(before, averages.get_weights(), students.get_weights()):
        np.testing.assert_allclose(new, 0.5 * old + 0.5 * target, rtol=1e-6)


def test_the_distiller_builds_the_method_with_its_options_and_keeps_them_in_its_config():
    students = build_students("resnet8", 3, base_width=4, input_shape=(16, 16, 3))
    distiller = OnlineDistiller(students, method="mfef", method_options={"splits": 2, "kernel_size": "3"})
    block = distiller.fusion.get_layer("s0_multi_scale")
    assert block.splits == 2 and distiller.online_method.kernel_size == 3
    assert distiller.get_config()["method_options"] == {"splits": 2, "kernel_size": 3}
    assert OnlineDistiller.from_config(distiller.get_config()).online_method.splits == 2


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("pcl", {"ema_decy": 0.9}, "Unknown pcl option 'ema_decy'. Allowed: ema_decay. Did you mean 'ema_decay'?"),
        ("dml", {"ema_decay": 0.9}, "Unknown dml option 'ema_decay': method 'dml' has no options."),
        ("pcl", {"ema_decay": 1.0}, "pcl option ema_decay must be >= 0 and < 1, got 1.0."),
        ("pcl", {"ema_decay": "fast"}, "pcl option ema_decay must be a finite number, got 'fast'."),
        ("mfef", {"kernel_size": 4}, "mfef option kernel_size must be a positive odd integer, got 4."),
        ("pcl", ["ema_decay=0.9"], "method_options must map pcl option names to values, got ['ema_decay=0.9']."),
    ],
)
def test_a_bad_method_option_is_refused_in_one_line_naming_what_is_allowed(method, options, message):
    with pytest.raises(ValueError) as error:
        TrainConfig(method=method, method_options=options)
    assert str(error.value) == message


def test_options_keep_their_types_and_a_default_spelled_out_is_the_same_experiment():
    default = TrainConfig(method="pcl")
    spelled = TrainConfig(method="pcl", method_options={"ema_decay": "0.999"})
    assert spelled.method_options == {} and spelled.experiment_hash() == default.experiment_hash()
    changed = TrainConfig(method="pcl", method_options={"ema_decay": "0.99"})
    assert changed.method_options == {"ema_decay": 0.99} and changed.experiment_hash() != default.experiment_hash()


def test_a_command_line_option_overrides_that_option_of_the_config_file(tmp_path):
    config = tmp_path / "mfef.yaml"
    config.write_text("method: mfef\nmethod_options:\n  splits: 2\n  reduction: 4\n")
    assert resolve_config(str(config)).method_options == {"reduction": 4, "splits": 2}
    resolved = resolve_config(str(config), {"method_options": {"reduction": "2"}})
    assert resolved.method_options == {"reduction": 2, "splits": 2}


@pytest.mark.parametrize(
    "run, change, differs",
    [
        ("mfef@resnet20+resnet8-seed1", {"method_options": {"kernel_size": 5}}, ["method_options"]),
        ("ffl@resnet8+resnet8-seed0", {"temperature": 4.0}, ["temperature"]),
        ("dml@resnet8+resnet8-seed0", {"seed": 1}, ["seed"]),
    ],
)
def test_a_stored_run_trained_before_method_options_shows_no_difference(run, change, differs):
    # Read only: the committed runs of the compressed-cohort study, which `mfef study` resumes.
    stored = json.loads((STUDY_RUNS / run / "config.json").read_text())
    assert "method_options" not in stored["config"]
    config = TrainConfig(**stored["config"])
    assert config.method_options == {} and config.experiment_hash() == stored["experiment_hash"]
    assert config_differences(STUDY_RUNS / run, config) == []
    assert config_differences(STUDY_RUNS / run, dataclasses.replace(config, **change)) == differs


def test_train_refuses_an_unknown_method_option_in_one_line(tmp_path):
    never = tmp_path / "never-made"
    refused = run_mfef("train", "--method", "pcl", "--method-option", "decay=0.9", "--run-dir", never)
    one_error_line(refused, "Unknown pcl option 'decay'", "Allowed: ema_decay")
    malformed = run_mfef("train", "--method", "pcl", "--method-option", "ema_decay", "--run-dir", never)
    one_error_line(malformed, "expected NAME=VALUE", "'ema_decay'")
    assert not never.exists()


# A digits epoch of 64 images in a child process, 11-15 s: slow, run by .ci/run step 3; the options' parsing and
# checks stay in the default suite.
@pytest.mark.slow
def test_train_records_a_valid_method_option_in_config_json(tmp_path):
    run = tmp_path / "pcl"
    tiny = ["--base-width", "4", "--train-limit", "64", "--batch-size", "64", "--epochs", "1", "--no-progress"]
    done = run_mfef("train", "--method", "pcl", "--method-option", "ema_decay=0.9", *tiny, "--run-dir", run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["config"]["method_options"] == {"ema_decay": 0.9}
