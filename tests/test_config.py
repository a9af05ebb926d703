import json

import pytest

from mfef_keras.training.config import TrainConfig, read_config_file, resolve_config, shipped_configs
from mfef_keras.training.run_directory import RunDirectoryError, check_run_dir, summarize, write_config


def test_defaults_train_mfef_on_digits():
    config = TrainConfig()
    assert (config.dataset, config.method, config.num_students) == ("digits", "mfef", 2)
    assert config.effective_rampup_epochs == pytest.approx(config.epochs * 80 / 300)
    # The recipe's milestones (150 and 225 of 300 epochs) scaled to the run's 20 epochs.
    assert config.lr_milestones is None and config.effective_lr_milestones == [10, 15]


def test_command_line_overrides_the_file_which_overrides_defaults(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("epochs: 7\nmethod: dml\nseed: 3\n")
    config = resolve_config(str(file), {"epochs": 2, "seed": None})
    assert (config.epochs, config.method, config.seed) == (2, "dml", 3)


def test_json_config(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"backbone": "resnet20", "lr_milestones": [30]}))
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


def test_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        read_config_file("nope.yaml")


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


def test_summary_takes_best_and_last():
    history = [
        {"epoch": 0, "val_acc_s0": 0.5, "val_acc_s1": 0.6, "val_acc_ensemble": 0.6},
        {"epoch": 1, "val_acc_s0": 0.8, "val_acc_s1": 0.7, "val_acc_ensemble": 0.85},
        {"epoch": 2, "val_acc_s0": 0.75, "val_acc_s1": 0.72, "val_acc_ensemble": 0.8},
    ]
    summary = summarize(history, 2, has_fused=False)
    assert summary["s0"] == {"best": 0.8, "best_epoch": 1, "last": 0.75}
    assert summary["best_student"]["name"] == "s0"
    assert summary["ensemble"]["last"] == 0.8
    tied = summarize([{**history[1], "epoch": 3}, *history], 2, has_fused=False)
    assert tied["s0"]["best_epoch"] == 3
