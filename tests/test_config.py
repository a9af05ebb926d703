import json
import math
import os
import subprocess
import sys

import pytest

from mfef_keras.training.config import TrainConfig, read_config_file, resolve_config, shipped_configs
from mfef_keras.training.run_directory import (
    RunDirectoryError,
    check_run_dir,
    format_summary,
    summarize,
    write_config,
)
from tests.helpers import one_error_line, run_mfef


def test_defaults_train_mfef_on_digits():
    config = TrainConfig()
    assert (config.dataset, config.method, config.num_students) == ("digits", "mfef", 2)
    assert config.effective_rampup_epochs == pytest.approx(config.epochs * 80 / 300)
    # The recipe's milestones (150 and 225 of 300 epochs) scaled to the run's 20 epochs.
    assert config.lr_milestones is None and config.effective_lr_milestones == [10, 15]


@pytest.mark.parametrize("epochs, milestones", [(1, []), (2, [1]), (3, [2]), (4, [2, 3]), (15, [8, 11])])
def test_short_runs_get_distinct_milestones_inside_the_run_or_none(epochs, milestones):
    # Scaled 150/225 of 300 would give [0, 1] for 1 epoch (training at a tenth of the rate) and [2, 2] for 3.
    assert TrainConfig(epochs=epochs).effective_lr_milestones == milestones


def test_command_line_overrides_the_file_which_overrides_defaults(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("epochs: 7\nmethod: dml\nseed: 3\n")
    config = resolve_config(str(file), {"epochs": 2, "seed": None})
    assert (config.epochs, config.method, config.seed) == (2, "dml", 3)


def test_json_config(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"backbone": "resnet20", "epochs": 40, "lr_milestones": [30]}))
    config = resolve_config(str(file))
    assert config.backbone == "resnet20" and config.lr_milestones == [30]


def test_unknown_config_key_names_the_key_and_the_file(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("epoch: 7\n")
    with pytest.raises(ValueError, match=r"Unknown config key 'epoch'.*Did you mean 'epochs'.*c\.yaml"):
        read_config_file(str(file))


def test_paper_recipe_ships_with_the_package():
    assert "paper-cifar100-resnet32" in shipped_configs()
    config = resolve_config("paper-cifar100-resnet32")
    assert (config.dataset, config.backbone, config.epochs, config.batch_size) == ("cifar100", "resnet32", 300, 128)
    assert config.lr_milestones == config.effective_lr_milestones == [150, 225]
    assert config.effective_rampup_epochs == 80


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"method": "mfe"}, "Unknown method 'mfe'.*Did you mean 'mfef'"),
        ({"backbone": "resnet31"}, "Unknown backbone 'resnet31'"),
        ({"strategy": "mirored"}, "Unknown strategy 'mirored'.*Did you mean 'mirrored'"),
        ({"precision": "fp16"}, "Unknown precision 'fp16'"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"num_students": 1}, "num_students must be >= 2"),
        ({"ablate": ["attn"]}, "Unknown ablation 'attn'"),
    ],
)
def test_bad_values_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(None, overrides)


@pytest.mark.parametrize(
    "overrides, match",
    [
        # ints: no bools, no fractions, no words
        ({"epochs": True}, r"epochs must be an integer, got True\."),
        ({"batch_size": 1.5}, r"batch_size must be an integer, got 1\.5\."),
        ({"seed": "three"}, r"seed must be an integer, got 'three'\."),
        ({"base_width": "wide"}, r"base_width must be an integer or null, got 'wide'\."),
        # floats: finite numbers, no bools
        ({"learning_rate": math.nan}, r"learning_rate must be a finite number, got nan\."),
        ({"learning_rate": "inf"}, r"learning_rate must be a finite number, got 'inf'\."),
        ({"temperature": False}, r"temperature must be a finite number, got False\."),
        ({"rampup_epochs": "soon"}, r"rampup_epochs must be a finite number or null, got 'soon'\."),
        # bools and strings
        ({"jit": "maybe"}, r"jit must be true or false, got 'maybe'\."),
        ({"progress": 1}, r"progress must be true or false, got 1\."),
        ({"dataset": 10}, r"dataset must be a string, got 10\."),
        # lists
        ({"lr_milestones": "a,b"}, r"lr_milestones must be a list of integers .*comma-separated.*got 'a,b'"),
        ({"lr_milestones": 5}, r"lr_milestones must be a list of integers"),
        ({"ablate": ["attention", 3]}, r"ablate must be a list of names"),
        ({"ablate": "attention,multiscale"}, r"Unknown ablation 'multiscale'.*Did you mean 'multi_scale'"),
        # ranges
        ({"learning_rate": 0}, r"learning_rate must be > 0, got 0\.0\."),
        ({"lr_decay": -0.1}, r"lr_decay must be > 0 and <= 1, got -0\.1\."),
        ({"lr_decay": 0}, r"lr_decay must be > 0 and <= 1"),
        ({"lr_decay": 10}, r"lr_decay must be > 0 and <= 1, got 10\.0\."),
        ({"student_weight_decay": -1e-4}, r"student_weight_decay must be >= 0"),
        ({"fusion_weight_decay": -1}, r"fusion_weight_decay must be >= 0"),
        ({"temperature": 0}, r"temperature must be > 0"),
        ({"rampup_epochs": -1}, r"rampup_epochs must be >= 0 or null"),
        ({"base_width": 0}, r"base_width must be a positive integer or null, got 0\."),
        ({"seed": -1}, r"seed must be >= 0, got -1\."),
        ({"train_limit": 0}, r"train_limit must be a positive integer or null, got 0\."),
        ({"cpu_devices": 0}, r"cpu_devices must be a positive integer or null"),
        ({"lr_milestones": [15, 10]}, r"lr_milestones must be distinct.*\(20\), got \[15, 10\]"),
        ({"lr_milestones": "10,10"}, r"lr_milestones must be distinct epochs in ascending order"),
        ({"lr_milestones": [0, 10]}, r"lr_milestones must be distinct epochs.*each > 0"),
        ({"lr_milestones": [10, 20]}, r"lr_milestones must be distinct epochs.*< epochs \(20\)"),
    ],
)
def test_values_of_the_wrong_type_or_range_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(None, overrides)


def test_values_get_their_declared_types():
    config = resolve_config(
        None,
        {"epochs": "30", "batch_size": 32.0, "learning_rate": "1e-2", "temperature": 4, "jit": "yes"}
        | {"progress": "Off", "ablate": "attention", "lr_milestones": " 15, 25 ", "base_width": "8"},
    )
    assert (config.epochs, config.batch_size, config.base_width) == (30, 32, 8)
    assert type(config.epochs) is int and type(config.batch_size) is int
    assert (config.learning_rate, config.temperature) == (0.01, 4.0) and type(config.temperature) is float
    assert (config.jit, config.progress) == (True, False)
    assert config.ablate == ["attention"] and config.lr_milestones == [15, 25]
    assert resolve_config(None, {"ablate": "attention,multi_scale"}).ablate == ["attention", "multi_scale"]


def test_spelling_of_a_value_does_not_change_the_experiment_hash(tmp_path):
    spelled = tmp_path / "spelled.yaml"
    spelled.write_text('learning_rate: 1e-2\nlr_milestones: "10,15"\nablate: attention\ntemperature: 4\n')
    plain = tmp_path / "plain.yaml"
    plain.write_text("learning_rate: 0.01\nlr_milestones: [10, 15]\nablate: [attention]\ntemperature: 4.0\n")
    # YAML reads 1e-2 (no dot) as a string: it must still train at 0.01.
    assert read_config_file(str(spelled))["learning_rate"] == "1e-2"
    a, b = resolve_config(str(spelled)), resolve_config(str(plain))
    assert a.learning_rate == 0.01 and a == b
    assert a.experiment_hash() == b.experiment_hash() == resolve_config(None, b.to_dict()).experiment_hash()
    assert a.experiment_hash() != resolve_config(str(plain), {"learning_rate": 0.02}).experiment_hash()


def test_cli_refuses_a_bad_value_with_one_clean_line_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras"), TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "mfef_keras.cli", "train", "--lr-decay", "-0.1", "--run-dir", str(run)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: lr_decay must be > 0 and <= 1, got -0.1."], result.stderr
    assert not run.exists()


def test_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        read_config_file("nope.yaml")


def test_a_directory_or_binary_file_as_config_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"Config file '{tmp_path}' is a directory; give a YAML or JSON file"):
        read_config_file(str(tmp_path))
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"c\.yaml is not UTF-8 text"):
        read_config_file(str(tmp_path / "c.yaml"))


# A config file that does not parse -> (its name, its text, where the parser stops).
BROKEN_CONFIGS = {
    "unclosed list": ("c.yaml", "epochs: 3\nlr_milestones: [1, 2\nseed: 0\n", "line 3, column 5"),
    "mapping in a value": ("c.yaml", "epochs: 3\nmethod: mfef: kd\n", "line 2, column 13"),
    "a tab": ("c.yaml", "epochs: 3\n\tseed: 0\n", "line 2, column 1"),
    "a control character": ("c.yaml", 'epochs: 3\nmethod: "mf\x07ef"\n', "line 2, column 12"),
    "undefined alias": ("c.yaml", "epochs: *three\n", "line 1, column 9"),
    "JSON trailing comma": ("c.json", '{"epochs": 3,\n}', "line 2, column 1"),
}


@pytest.mark.parametrize("case", BROKEN_CONFIGS)
def test_a_config_that_does_not_parse_is_named_in_one_line_with_its_line_and_column(tmp_path, case):
    name, text, where = BROKEN_CONFIGS[case]
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as raised:
        read_config_file(str(tmp_path / name))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"Cannot parse config file {tmp_path / name}, {where}: ")


def test_train_with_a_config_that_does_not_parse_exits_with_one_error_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 3\nlr_milestones: [1, 2\nseed: 0\n")
    result = run_mfef("train", "--config", config, "--run-dir", tmp_path / "run")
    one_error_line(result, f"Cannot parse config file {config}, line 3, column 5: expected ',' or ']'")
    assert not (tmp_path / "run").exists()


def test_run_directory_of_another_config_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_config(run, TrainConfig(epochs=3))
    assert check_run_dir(run, TrainConfig(epochs=3, progress=False, run_dir=str(run)))
    with pytest.raises(RunDirectoryError, match="different configuration.*epochs"):
        check_run_dir(run, TrainConfig(epochs=4))


def test_non_run_directory_and_unwritable_parent_are_refused(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file.txt").write_text("x")
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        check_run_dir(tmp_path / "stuff", TrainConfig())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(RunDirectoryError, match="not writable"):
            check_run_dir(locked / "run", TrainConfig())
    finally:
        locked.chmod(0o700)


def _row(epoch: int, val: tuple[float, float, float], test: tuple[float, float, float]) -> dict:
    models = ("s0", "s1", "ensemble")
    return (
        {"epoch": epoch}
        | {f"val_acc_{m}": v for m, v in zip(models, val)}
        | {f"test_acc_{m}": t for m, t in zip(models, test)}
    )


# Validation and test disagree: validation peaks at epoch 2 (s0) and s1 is the better student on it; test peaks
# at epoch 3 and prefers s0.
HISTORY = [
    _row(1, (0.5, 0.6, 0.6), (0.5, 0.5, 0.6)),
    _row(2, (0.8, 0.85, 0.85), (0.7, 0.6, 0.8)),
    _row(3, (0.75, 0.7, 0.8), (0.9, 0.65, 0.82)),
]


def test_summary_selects_on_the_validation_split_and_reports_test_there_and_last():
    summary = summarize(HISTORY, 2, has_fused=False)
    assert summary["s0"] == {"best_val": 0.8, "best_epoch": 2, "test_at_best": 0.7, "test_last": 0.9}
    assert summary["best_student"] == {
        "name": "s1",
        "best_val": 0.85,
        "best_epoch": 2,
        "test_at_best": 0.6,
        "test_last": 0.65,
        "chosen_from": ["s0", "s1"],
        "reason": "the best by validation top-1 of the students (s0, s1)",
    }
    assert summary["ensemble"]["test_last"] == 0.82
    assert summary["selection"] == "validation" and summary["selection_label"] == "selected on the validation split"
    tied = summarize([*HISTORY, {**HISTORY[1], "epoch": 4}], 2, has_fused=False)
    assert tied["s0"]["best_epoch"] == 4


def test_summary_selected_on_test_is_the_papers_protocol_and_says_so():
    summary = summarize(HISTORY, 2, has_fused=False, selection="test")
    assert summary["s0"] == {"best_val": 0.75, "best_epoch": 3, "test_at_best": 0.9, "test_last": 0.9}
    assert summary["best_student"]["name"] == "s0"
    assert summary["selection_label"] == "selected on the test split (papers' protocol)"
    assert "selected on the test split (papers' protocol)" in format_summary(summary)


def test_selection_is_part_of_the_experiment():
    assert TrainConfig().selection == "validation"
    assert TrainConfig(selection="test").experiment_hash() != TrainConfig().experiment_hash()
    with pytest.raises(ValueError, match="Unknown selection 'tset'"):
        TrainConfig(selection="tset")


def test_a_run_written_with_other_spellings_of_the_same_values_is_the_same_experiment(tmp_path):
    # config.json as an earlier version wrote it: integers where floats are declared, its own hash.
    run = tmp_path / "run"
    run.mkdir()
    stored = TrainConfig(epochs=3).to_dict() | {"rampup_epochs": 1, "learning_rate": 1}
    (run / "config.json").write_text(json.dumps({"experiment_hash": "0" * 16, "config": stored}))
    assert check_run_dir(run, TrainConfig(epochs=3, rampup_epochs=1.0, learning_rate=1.0))
    with pytest.raises(RunDirectoryError, match=r"differs in: learning_rate, rampup_epochs\)"):
        check_run_dir(run, TrainConfig(epochs=3))
