"""What a new user meets in the first hour, each command in a process of its own with its output piped to a file.

Pulling and evaluating a shipped zoo student, the CIFAR error, and the one-call library entry points.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import subprocess_env

PRESET = "resnet8_mfef.digits_s0"


def _mfef(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """``mfef ARGS`` in ``tmp_path`` with stdout and stderr piped into one log file; the result and the log."""
    log = tmp_path / "mfef.log"
    with log.open("wb") as file:
        done = subprocess.run(
            [sys.executable, "-m", "mfef_keras.cli", *args],
            cwd=tmp_path,
            stdout=file,
            stderr=subprocess.STDOUT,
            env=subprocess_env(MFEF_ZOO_CACHE=str(tmp_path / "cache"), MFEF_ZOO_OFFLINE="1"),
            timeout=300,
        )
    return done, log.read_text()


def test_zoo_pull_and_eval_piped_write_plain_lines_and_say_where_results_go(tmp_path):
    done, output = _mfef(tmp_path, "zoo", "pull", PRESET)
    assert done.returncode == 0, output
    assert f"{PRESET}: verified" in output
    # No progress bar redraws (\r) nor colours in a pipe.
    assert not {"\r", "\b", "\x1b"} & set(output), repr(output)

    done, output = _mfef(tmp_path, "eval", PRESET)
    assert done.returncode == 0, output
    default = tmp_path / f"{PRESET}-eval"
    assert f"note: writing the results to {default} " in output and "--out chooses" in output
    assert json.loads((default / "metrics.json").read_text())["top1"] > 0.99

    done, output = _mfef(tmp_path, "eval", PRESET, "--out", "chosen")
    assert done.returncode == 0, output
    assert "note: writing" not in output and "Wrote chosen/metrics.json" in output
    assert (tmp_path / "chosen" / "confusion_matrix.png").is_file()


# About 8 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_a_missing_cifar_archive_names_the_command_line_option(tmp_path):
    (tmp_path / "data").mkdir()
    done, output = _mfef(tmp_path, "train", "--dataset", "cifar10", "--data-dir", "data", "--run-dir", "run")
    assert done.returncode == 1, output
    assert "cifar-10-binary.tar.gz" in output and "pass --data-dir (data_dir= in Python)" in output
    assert "Traceback" not in output


_ENTRY_POINTS = """
import keras
import numpy as np

import mfef_keras

model = mfef_keras.from_preset("resnet8_mfef.digits_s0", include_preprocessing=True)
# One input tensor, as keras.applications models have, not a list of one.
assert isinstance(model.input, keras.KerasTensor), model.input
assert tuple(model.input.shape) == (None, 32, 32, 1) and model.input.dtype == "uint8"
assert model.mfef_metadata["dataset"]["class_names"][:3] == ["0", "1", "2"]
logits = model.predict(np.zeros((2, 32, 32, 1), "uint8"), verbose=0)
assert logits.shape == (2, 10)

student = mfef_keras.create_student("resnet20", num_classes=7, input_shape=(28, 28, 1), base_width=4)
assert isinstance(student.input, keras.KerasTensor) and tuple(student.output.shape) == (None, 7)
assert all(type(layer).__module__.startswith("keras.") for layer in student.layers)
student.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
student.fit(np.zeros((4, 28, 28, 1), "float32"), np.arange(4), epochs=1, verbose=0)
student.save("student.keras")
print("ok", type(keras.saving.load_model("student.keras").input).__name__)
"""


# About 11 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_from_preset_and_create_student_give_plain_keras_models(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY_POINTS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(MFEF_ZOO_CACHE=str(tmp_path / "cache"), MFEF_ZOO_OFFLINE="1"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok KerasTensor"), done.stdout


def _stderr_of(code: str, tmp_path: Path) -> str:
    env = subprocess_env()
    # The TensorFlow defaults a user has: no log level chosen.
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


# About 13 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_tensorflow_s_start_up_notices_are_written_once_after_importing_the_package(tmp_path):
    # TensorFlow 2.21 alone writes them once per native library: twice.
    plain = _stderr_of("import tensorflow", tmp_path)
    once = _stderr_of("import mfef_keras, keras; print(keras.ops.ones(2))", tmp_path)
    for notice in ("oneDNN custom operations", "absl::InitializeLog()"):
        assert once.count(notice) == min(plain.count(notice), 1), once
