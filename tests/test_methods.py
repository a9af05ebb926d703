"""The method registry and the methods it adds (KDCL, ONE): losses on fixed logits against the papers' formulas,
one step on each backend, and one digits epoch of every registered method through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mfef_keras.distill import OnlineDistiller, list_methods, method_class
from mfef_keras.distill.methods import fused_methods, method_descriptions
from mfef_keras.models import build_students
from tests.helpers import run_on_jax, subprocess_env

CLASSES = 5
T = 3.0


def _softmax(z, t=1.0):
    e = np.exp(z / t - (z / t).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ce(z, y):
    return float(np.mean(-np.log(_softmax(z)[np.arange(len(y)), y])))


def _kd(teacher, student, t=T):
    q = _softmax(teacher, t) + 1e-7
    return float(t * t * np.mean(np.sum(q * (np.log(q) - np.log(_softmax(student, t))), -1)))


def _logits(n=3, batch=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = [rng.normal(scale=2.0, size=(batch, CLASSES)).astype("float32") for _ in range(n)]
    return logits, rng.integers(0, CLASSES, size=batch)


def test_kdcl_naive_teaches_each_example_with_the_student_of_lowest_cross_entropy():
    z, y = _logits()
    terms = {k: float(v) for k, v in method_class("kdcl-naive")().loss_terms(y, z, {}, 1.0).items()}
    per_example = np.stack([-np.log(_softmax(zi)[np.arange(len(y)), y]) for zi in z])
    teacher = np.stack(z)[per_example.argmin(0), np.arange(len(y))]
    for i, zi in enumerate(z):
        assert terms[f"kd_s{i}"] == pytest.approx(_kd(teacher, zi), rel=1e-5)
    expected = sum(_ce(zi, y) for zi in z) + sum(_kd(teacher, zi) for zi in z)
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)
    # The teacher mixes students: on these logits no one student is best on every example.
    assert len(set(per_example.argmin(0))) > 1


def test_kdcl_minlogit_teacher_is_the_minimum_of_logits_less_the_true_class_logit():
    z, y = _logits(seed=1)
    terms = {k: float(v) for k, v in method_class("kdcl-minlogit")().loss_terms(y, z, {}, 1.0).items()}
    shifted = np.stack([zi - zi[np.arange(len(y)), y][:, None] for zi in z])
    teacher = shifted.min(0)
    assert np.all(teacher[np.arange(len(y)), y] == 0)
    for i, zi in enumerate(z):
        assert terms[f"kd_s{i}"] == pytest.approx(_kd(teacher, zi), rel=1e-5)
    assert terms["loss"] == pytest.approx(sum(_ce(zi, y) + _kd(teacher, zi) for zi in z), rel=1e-5)


def test_one_gates_the_students_into_a_teacher_that_distils_into_each():
    students = build_students("resnet8", CLASSES, num_students=3, base_width=4, input_shape=(16, 16, 3))
    distiller = OnlineDistiller(students, method="one")
    images = np.random.default_rng(2).normal(size=(4, 16, 16, 3)).astype("float32")
    y = np.array([0, 1, 2, 3])
    outputs = distiller.students_net(images, training=False)
    features, z = list(outputs[0::2]), [np.asarray(t) for t in outputs[1::2]]
    gate = np.asarray(distiller.fusion(features, training=False))
    assert gate.shape == (4, 3) and np.allclose(gate.sum(-1), 1, atol=1e-6) and np.all(gate > 0)
    fused = np.einsum("bn,nbc->bc", gate, np.stack(z))
    _, extras = distiller._forward(images, training=False)
    np.testing.assert_allclose(np.asarray(extras["fused"]), fused, rtol=1e-5, atol=1e-6)
    terms = {k: float(v) for k, v in distiller.loss_terms(y, z, {"fused": fused}).items()}
    expected = sum(_ce(zi, y) for zi in z) + _ce(fused, y) + sum(_kd(fused, zi) for zi in z)
    assert terms["ce_fused"] == pytest.approx(_ce(fused, y), rel=1e-5)
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["kdcl-naive", "kdcl-minlogit", "one"])
def test_the_teacher_of_the_new_methods_gets_no_gradient_from_the_kd_terms(method):
    z, y = _logits(n=2, seed=3)
    variables = [tf.Variable(zi) for zi in z]
    fused = tf.Variable(z[0] + z[1])
    with tf.GradientTape(persistent=True) as tape:
        terms = method_class(method)().loss_terms(y, variables, {"fused": fused}, 1.0)
    # KD(z_0 <- teacher) moves z_0 only: the teacher built from z_1 (or the fused logits) is detached.
    assert tape.gradient(terms["kd_s0"], variables[1]) is None
    assert tape.gradient(terms["kd_s0"], fused) is None
    assert np.abs(tape.gradient(terms["kd_s0"], variables[0]).numpy()).sum() > 0


def test_every_method_is_registered_with_a_description_and_the_baseline_first():
    names = list_methods()
    assert names[0] == "independent"
    assert {"dml", "ffl", "mfef", "kdcl-naive", "kdcl-minlogit", "one"} <= set(names)
    assert all(len(text) > 20 for text in method_descriptions().values())
    with pytest.raises(ValueError, match="Unknown method 'kdcl'.*kdcl-minlogit"):
        method_class("kdcl")


def test_list_methods_prints_every_method_with_its_description():
    done = subprocess.run(
        [sys.executable, "-m", "mfef_keras.cli", "list-methods"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # A method's own line, then indented ones: its options with their defaults, and its fused classifier.
    methods = [line for line in lines if not line.startswith(" ")]
    assert [line.split()[0] for line in methods] == list_methods()
    assert any(line.startswith("one ") and "gate" in line for line in methods)
    pcl = lines[lines.index(next(line for line in methods if line.startswith("pcl "))) + 1 :]
    assert pcl[0].split()[:2] == ["--method-option", "ema_decay=0.999"]
    assert pcl[1].strip() == "fused classifier: mfef export RUN --model fused"
    assert sum("fused classifier" in line for line in lines) == len(fused_methods())


# About 15 s a method: run by .ci/run's slow step, not in the default suite.
@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_each_method_trains_a_digits_epoch_through_the_cli(method, tmp_path):
    run_dir = tmp_path / method
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mfef_keras.cli",
            "train",
            "--method",
            method,
            "--epochs",
            "1",
            "--run-dir",
            str(run_dir),
        ]
        + ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress"]
        + ["--students", str(max(2, method_class(method).min_students))],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    metadata = json.loads((run_dir / "best_student" / "metadata.json").read_text())
    assert metadata["method"] == method and metadata["student_index"] == int(summary["best_student"]["name"][1:])
    rows = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    assert np.isfinite(rows[0]["loss"]) and rows[0]["loss"] > 0


_JAX_STEP = """
import keras
import numpy as np
from mfef_keras.distill import OnlineDistiller, list_methods, method_class
from mfef_keras.models import build_students

assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
images = rng.normal(size=(8, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 4, size=8)
for method in list_methods():
    count = max(2, method_class(method).min_students)
    students = build_students("resnet8", 4, num_students=count, base_width=16, input_shape=(16, 16, 3))
    distiller = OnlineDistiller(students, method=method, rampup_epochs=0)
    distiller.compile(learning_rate=0.05)
    before = [np.array(v) for v in distiller.trainable_variables]
    logs = distiller.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]), method
    moved = [not np.allclose(b, np.array(v)) for b, v in zip(before, distiller.trainable_variables)]
    assert all(moved), (method, sum(moved), len(moved))
    print("ok", method)
"""


# One JAX compilation per method, minutes in all: run by .ci/run's slow step.
@pytest.mark.slow
@pytest.mark.needs_jax
def test_each_method_takes_a_step_on_jax_that_moves_every_weight():
    assert run_on_jax(_JAX_STEP).split() == [word for method in list_methods() for word in ("ok", method)]


_JAX_TEACHER_STEP = """
import keras
import numpy as np
from mfef_keras.distill import OnlineDistiller
from mfef_keras.models import build_students, get_backbone

assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
images = rng.normal(size=(8, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 4, size=8)
students = build_students("resnet8", 4, base_width=4, input_shape=(16, 16, 3))
teacher = get_backbone("resnet20", 4, base_width=4, input_shape=(16, 16, 3))
distiller = OnlineDistiller(students, method="dml", teacher=teacher, teacher_weight=0.5, rampup_epochs=0)
distiller.compile(learning_rate=0.05)
frozen = [np.array(v) for v in distiller.teacher.weights]
before = [np.array(v) for v in distiller.trainable_variables]
logs = distiller.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
assert all(np.isfinite(logs[f"kd_teacher_s{i}"][0]) and logs[f"kd_teacher_s{i}"][0] > 0 for i in range(2)), logs
moved = [not np.allclose(b, np.array(v)) for b, v in zip(before, distiller.trainable_variables)]
assert all(moved), (sum(moved), len(moved))
assert all(np.array_equal(f, np.array(v)) for f, v in zip(frozen, distiller.teacher.weights))
print("ok teacher")
"""


# A JAX compilation of a cohort and its teacher in a child process: run by .ci/run's slow step.
@pytest.mark.slow
@pytest.mark.needs_jax
def test_an_offline_teacher_step_on_jax_trains_the_students_and_leaves_the_teacher_frozen():
    assert run_on_jax(_JAX_TEACHER_STEP).split() == ["ok", "teacher"]
