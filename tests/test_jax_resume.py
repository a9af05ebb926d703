"""`mfef train` on JAX, and checkpoints that carry a run from one backend to the other.

A reference run trains three epochs on TensorFlow; after its first epoch, a copy of its run directory is
taken, as a run interrupted there would have left it. JAX resumes that copy (a copy of it is taken after
its second epoch in turn) and TensorFlow resumes the second copy for the third epoch. Each process is the
`mfef` command in a child with KERAS_BACKEND set; `click.echo` is wrapped so that the copies are taken when
an epoch's line is told, after its checkpoint is written.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import subprocess_env

EPOCHS = 3
STEPS_PER_EPOCH = 8
# resnet8 at width 16 (widths 4 and 8 crash TensorFlow's oneDNN on partial batches, as evaluation has).
ARGS = ["--dataset", "digits", "--backbone", "resnet8", "--base-width", "16", "--train-limit", "256"]
# After the first epoch the rate drops to 1e-4. At higher rates the two backends' curves part within an
# epoch: on these images some gradients are ill-conditioned (the stem's gradient after one epoch differs by
# 0.5 % between TensorFlow's fused and unfused BatchNorm kernels, as much as between TensorFlow and JAX),
# and eight steps at 0.01 move the epoch's mean loss apart by 1e-4, its validation loss by 3e-3.
ARGS += ["--batch-size", "32", "--epochs", str(EPOCHS), "--lr", "0.01", "--lr-milestones", "1", "--lr-decay", "0.01"]
ARGS += ["--no-progress"]

_TRAIN_AND_COPY = """
import shutil, sys
import click
from mfef_keras.cli import main
from mfef_keras.training.run_directory import LOCK_FILE

copy_after, copy_to, run_dir, *args = sys.argv[1:]
tell = click.echo


def tell_and_copy(message=None, **kwargs):
    tell(message, **kwargs)
    if copy_to != "-" and str(message).startswith(f"epoch {copy_after}/"):
        shutil.copytree(run_dir, copy_to, ignore=shutil.ignore_patterns(LOCK_FILE))


click.echo = tell_and_copy
main(["train", "--run-dir", run_dir, *args], prog_name="mfef")
"""


def _train(backend: str, run_dir, copy_after: int | None = None, copy_to=None, extra=()) -> subprocess.CompletedProcess:
    copy = [str(copy_after), str(copy_to)] if copy_to else ["0", "-"]
    return subprocess.run(
        [sys.executable, "-c", _TRAIN_AND_COPY, *copy, str(run_dir), *ARGS, *extra],
        env=subprocess_env(KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _rows(run_dir) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["epochs"]


def _iterations(run_dir) -> dict[str, int]:
    with np.load(run_dir / "checkpoint.npz") as checkpoint:
        return {key: int(checkpoint[key]) for key in checkpoint.files if key.endswith("/iteration")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference run (TensorFlow), its copy resumed on JAX, and the JAX run's copy resumed on TensorFlow."""
    root = tmp_path_factory.mktemp("resume")
    reference, on_jax, back_on_tf = root / "reference", root / "on_jax", root / "back_on_tf"
    outputs = {}
    for name, backend, run_dir, copy_after, copy_to in (
        ("reference", "tensorflow", reference, 1, on_jax),
        ("on_jax", "jax", on_jax, 2, back_on_tf),
        ("back_on_tf", "tensorflow", back_on_tf, None, None),
    ):
        result = _train(backend, run_dir, copy_after, copy_to)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        outputs[name] = result.stdout
    return {"reference": reference, "on_jax": on_jax, "back_on_tf": back_on_tf, "outputs": outputs}


# Slow (three mfef train processes, one compiling the JAX step: about a minute idle); .ci/run runs it.
@pytest.mark.slow
@pytest.mark.needs_jax
def test_a_tensorflow_run_resumes_on_jax_and_back(runs):
    outputs = runs["outputs"]
    assert "Keras backend: tensorflow." in outputs["reference"]
    assert "Keras backend: jax." in outputs["on_jax"]
    assert f"Resuming {runs['on_jax']} after epoch 1 of {EPOCHS}." in outputs["on_jax"]
    assert f"Resuming {runs['back_on_tf']} after epoch 2 of {EPOCHS}." in outputs["back_on_tf"]
    assert "epoch 1/" not in outputs["on_jax"] and "epoch 2/" not in outputs["back_on_tf"]

    reference = _rows(runs["reference"])
    resumed = {"on_jax": _rows(runs["on_jax"]), "back_on_tf": _rows(runs["back_on_tf"])}
    for name, rows in resumed.items():
        assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1)), name
        # Each optimiser's step counter went on from the checkpoint: the schedule and w(t) continue.
        assert _iterations(runs[name]) == {
            "student_optimizer/iteration": EPOCHS * STEPS_PER_EPOCH,
            "fusion_optimizer/iteration": EPOCHS * STEPS_PER_EPOCH,
        }
        for row, expected in zip(rows, reference):
            assert row["lr"] == pytest.approx(expected["lr"], rel=1e-6)
            assert row["kd_weight"] == pytest.approx(expected["kd_weight"], rel=1e-5)
    # JAX's epochs start from the weights and optimiser state TensorFlow saved, and TensorFlow's third
    # epoch from those JAX saved: the curves stay on the reference's.
    assert resumed["on_jax"][0] == reference[0]
    assert resumed["back_on_tf"][:2] == resumed["on_jax"][:2]
    for name, rows in resumed.items():
        for row, expected in zip(rows[1:], reference[1:]):
            for key in ("loss", "val_loss", "test_loss"):
                assert row[key] == pytest.approx(expected[key], rel=1e-4), f"{name} epoch {row['epoch']} {key}"
            for key in ("val_acc_s0", "test_acc_fused", "test_acc_ensemble"):
                assert row[key] == pytest.approx(expected[key], abs=0.01), f"{name} epoch {row['epoch']} {key}"
    environment = json.loads((runs["on_jax"] / "environment.json").read_text())
    assert environment["keras_backend"] == "tensorflow", "written when the run started"
    assert [(r["after_epoch"], r["keras_backend"]) for r in environment["resumes"]] == [(1, "jax")]
    environment = json.loads((runs["back_on_tf"] / "environment.json").read_text())
    assert [(r["after_epoch"], r["keras_backend"]) for r in environment["resumes"]] == [(1, "jax"), (2, "tensorflow")]
    assert all(math.isfinite(row["loss"]) for row in resumed["back_on_tf"])


@pytest.mark.parametrize(
    "backend, extra, message",
    [
        ("torch", ["--strategy", "mirrored"], "strategy mirrored (--strategy) needs the tensorflow or jax backend"),
        ("torch", ["--strategy", "multiworker"], "strategy multiworker (--strategy) needs the tensorflow or jax"),
        ("torch", ["--cpu-devices", "2"], "cpu_devices 2 (--cpu-devices) needs the tensorflow or jax backend"),
    ],
)
@pytest.mark.needs_torch
def test_strategies_a_backend_lacks_are_refused_before_anything_is_written(tmp_path, backend, extra, message):
    run_dir = tmp_path / "run"
    result = _train(backend, run_dir, extra=extra)
    assert result.returncode != 0
    assert message in result.stderr and f"KERAS_BACKEND is {backend!r}" in result.stderr
    assert not run_dir.exists()
