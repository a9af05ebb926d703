"""Offline teacher: every student of any online method also distils from a frozen network (Hinton KD)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from mfef_keras.distill import OnlineDistiller
from mfef_keras.models import build_students, get_backbone
from tests.helpers import run_mfef

CLASSES = 4


def _softmax(z, t=1.0):
    e = np.exp(z / t - (z / t).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kd(teacher, student, t=3.0):
    q = _softmax(teacher, t) + 1e-7
    return float(t * t * np.mean(np.sum(q * (np.log(q) - np.log(_softmax(student, t))), -1)))


def _distiller(method="dml", **kwargs):
    students = build_students("resnet8", CLASSES, base_width=4, input_shape=(16, 16, 3))
    teacher = get_backbone("resnet20", CLASSES, base_width=4, input_shape=(16, 16, 3))
    return OnlineDistiller(students, method=method, teacher=teacher, **kwargs)


def test_the_teacher_adds_a_weighted_kd_term_per_student_to_the_method_objective():
    distiller = _distiller(teacher_weight=0.5, rampup_epochs=0)
    rng = np.random.default_rng(0)
    images, labels = rng.normal(size=(6, 16, 16, 3)).astype("float32"), rng.integers(0, CLASSES, size=6)
    logits, extras = distiller._forward(images, training=False)
    teacher = np.asarray(distiller.teacher(images, training=False))
    np.testing.assert_allclose(np.asarray(extras["teacher"]), teacher, rtol=1e-6)
    terms = {k: float(v) for k, v in distiller.loss_terms(labels, logits, extras).items()}
    without = distiller.online_method.loss_terms(labels, logits, extras, 1.0)["loss"]
    z = [np.asarray(t) for t in logits]
    assert terms["kd_teacher_s1"] == pytest.approx(_kd(teacher, z[1]), rel=1e-5)
    assert terms["loss"] == pytest.approx(float(without) + 0.5 * sum(_kd(teacher, zi) for zi in z), rel=1e-5)


# About 9 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_training_leaves_the_teacher_frozen_and_a_saved_distiller_keeps_it(tmp_path):
    distiller = _distiller(method="mfef")
    teacher_before = [v.numpy().copy() for v in distiller.teacher.weights]
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 16, 16, 3)).astype("float32"), rng.integers(0, CLASSES, size=16)
    distiller.compile()
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert {"kd_teacher_s0", "kd_teacher_s1"} <= set(history)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(teacher_before, distiller.teacher.weights))
    assert not distiller.teacher.trainable_weights
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.teacher.predict(x, verbose=0), distiller.teacher.predict(x, verbose=0), atol=1e-6)
    assert loaded.teacher_weight == 1.0


def test_a_teacher_of_other_classes_or_image_size_is_refused_naming_both():
    students = build_students("resnet8", CLASSES, base_width=4, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="predicts \\[5\\] classes; the students predict 4"):
        OnlineDistiller(students, teacher=get_backbone("resnet8", 5, base_width=4, input_shape=(16, 16, 3)))
    with pytest.raises(ValueError, match="takes inputs \\[\\(32, 32, 3\\)\\]; the students take images of shape"):
        OnlineDistiller(students, teacher=get_backbone("resnet8", CLASSES, base_width=4))


TINY = ["--base-width", "4", "--train-limit", "128", "--batch-size", "64", "--no-progress", "--epochs", "1"]


# Two runs and an export in child processes (26 s): out of the default suite (kept under 10 minutes), run by
# .ci/run's slow step; the frozen-teacher test below stays.
@pytest.mark.slow
def test_a_run_teaches_the_students_of_another_run_through_the_cli(tmp_path):
    teacher_run = tmp_path / "teacher"
    done = run_mfef(
        "train", "--method", "independent", "--students", "1", "--backbone", "resnet20", *TINY, "--run-dir", teacher_run
    )
    assert done.returncode == 0, done.stderr[-2000:]
    taught = tmp_path / "taught"
    done = run_mfef("train", "--method", "dml", "--teacher", teacher_run, *TINY, "--run-dir", taught)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((taught / "metrics.json").read_text())["epochs"][0]
    assert row["kd_teacher_s0"] > 0 and row["kd_teacher_s1"] > 0
    config = json.loads((taught / "config.json").read_text())["config"]
    assert config["teacher"] == str(teacher_run)
    # The deployed student is a plain student: no teacher travels with it.
    card = json.loads((taught / "best_student" / "metadata.json").read_text())
    assert card["backbone"] == "resnet8"
    # Other data that every machine has: an image folder written here (Fashion-MNIST may not be installed).
    folder = _image_folder(tmp_path / "shapes")
    refused = run_mfef(
        "train", "--dataset", f"folder:{folder}", "--teacher", teacher_run, *TINY, "--run-dir", tmp_path / "other"
    )
    assert refused.returncode != 0 and "was trained on other data" in refused.stderr
    assert f"name 'digits' (here 'folder:{folder}')" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "other" / "summary.json").exists()


def _image_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("circle", "square"):
            (root / split / name).mkdir(parents=True)
            for index in range(40):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    root / split / name / f"{index}.png"
                )
    return root
