"""`pip install -e ".[jax]"` on Python 3.12, with no TensorFlow: `mfef train` and `mfef eval` work on JAX.

Slow (about 4 minutes on two cores): it builds a virtualenv and installs the `jax` extra from the package index.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import python_312

ROOT = Path(__file__).resolve().parents[1]
# The default MFEF pair on the embedded digits, at width 8 and four epochs: about 94 % test top-1.
TRAIN = ["--epochs", "4", "--base-width", "8", "--batch-size", "64", "--lr-milestones", "3", "--no-progress"]

pytestmark = [pytest.mark.slow, pytest.mark.needs_python312]


def _run(command: list, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    # Nothing of this process's environment that could lend the child its packages.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KERAS_BACKEND")}
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env={**clean, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def jax_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("jax-only") / "venv"
    subprocess.run([python_312(), "-m", "venv", venv], check=True, timeout=300)
    installed = _run([venv / "bin" / "pip", "install", "-q", "-e", f"{ROOT}[jax]"], ROOT)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def test_the_jax_extra_trains_and_evaluates_without_tensorflow(jax_venv, tmp_path):
    python, mfef = jax_venv / "bin" / "python", jax_venv / "bin" / "mfef"
    keras_home = str(tmp_path / "keras_home")
    missing = _run([python, "-c", "import tensorflow"], tmp_path)
    assert missing.returncode != 0 and "No module named 'tensorflow'" in missing.stderr
    version = _run([python, "-c", "import sys, jax; print(sys.version_info[:2], jax.__version__)"], tmp_path)
    assert version.stdout.startswith("(3, 12)"), version.stdout + version.stderr

    trained = _run([mfef, "train", "--run-dir", "run", *TRAIN], tmp_path, KERAS_BACKEND="jax", KERAS_HOME=keras_home)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert "Keras backend: jax." in trained.stdout and "epoch 4/4" in trained.stdout
    assert "no TensorBoard event files are written" in trained.stderr
    run = tmp_path / "run"
    for name in ("checkpoint.npz", "metrics.json", "summary.json", "curves.png", "best_student/model.keras"):
        assert (run / name).is_file(), name
    assert not (run / "tensorboard").exists()
    environment = json.loads((run / "environment.json").read_text())
    assert environment["keras_backend"] == "jax" and environment["python"].startswith("3.12")
    assert not any(name.startswith("tensorflow") for name in environment["packages"])
    best = json.loads((run / "summary.json").read_text())["best_student"]
    # Ten classes: chance is 10 %.
    assert best["test_at_best"] > 0.6, best

    evaluated = _run([mfef, "eval", run], tmp_path, KERAS_BACKEND="jax", KERAS_HOME=keras_home)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-3000:]
    metrics = json.loads((run / "best_student" / "eval" / "metrics.json").read_text())
    assert metrics["examples"] == 360 and metrics["top1"] == pytest.approx(best["test_at_best"], abs=1e-6)
    assert (run / "best_student" / "eval" / "confusion_matrix.png").is_file()


def test_without_tensorflow_mfef_picks_jax_and_refuses_what_needs_tensorflow_in_one_line(jax_venv, tmp_path):
    mfef = jax_venv / "bin" / "mfef"
    cifar = _run([mfef, "train", "--dataset", "cifar10", "--run-dir", "cifar"], tmp_path)
    assert cifar.returncode == 1 and "Traceback" not in cifar.stderr
    assert "using the jax backend" in cifar.stderr
    assert "Error: Dataset 'cifar10' is read through tensorflow-datasets, which needs TensorFlow" in cifar.stderr
    assert not (tmp_path / "cifar").exists()
    exported = _run([mfef, "export", "zoo-or-run", "--out", "exported"], tmp_path, KERAS_BACKEND="jax")
    assert exported.returncode == 1 and "Traceback" not in exported.stderr, exported.stderr[-2000:]
    assert "Error: mfef export needs onnx" in exported.stderr and "pip install 'mfef-keras[cpu]'" in exported.stderr
