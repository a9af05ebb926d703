import keras
import numpy as np
import pytest
import tensorflow as tf

from mfef_keras.distill import KDLoss, MultiStepDecay, rampup_weight


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_kd(teacher, student, t, eps):
    q = _softmax(teacher / t) + eps
    log_p = np.log(_softmax(student / t))
    return t * t * np.mean(np.sum(q * (np.log(q) - log_p), axis=-1))


TEACHER = np.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0]], "float32")
STUDENT = np.array([[1.0, 0.0, -0.5, 0.3], [-1.0, 2.5, 0.0, 0.4]], "float32")


@pytest.mark.parametrize("t, eps", [(3.0, 1e-7), (1.0, 0.0), (4.0, 1e-3)])
def test_kd_matches_numpy(t, eps):
    value = float(KDLoss(temperature=t, epsilon=eps)(TEACHER, STUDENT))
    assert value == pytest.approx(_np_kd(TEACHER.astype("float64"), STUDENT.astype("float64"), t, eps), rel=1e-5)


def test_kd_scales_with_temperature_squared_and_vanishes_on_equal_logits():
    assert float(KDLoss(3.0)(TEACHER, TEACHER)) == pytest.approx(0.0, abs=1e-5)
    # without the T^2 factor the value at T=3 would be 9x smaller
    raw = _np_kd(TEACHER, STUDENT, 3.0, 1e-7) / 9.0
    assert float(KDLoss(3.0)(TEACHER, STUDENT)) == pytest.approx(9.0 * raw, rel=1e-5)


def test_kd_epsilon_changes_the_value_as_the_reference_does():
    big = KDLoss(temperature=3.0, epsilon=0.1)(TEACHER, STUDENT)
    plain = KDLoss(temperature=3.0, epsilon=0.0)(TEACHER, STUDENT)
    assert float(big) == pytest.approx(_np_kd(TEACHER, STUDENT, 3.0, 0.1), rel=1e-5)
    assert abs(float(big) - float(plain)) > 1e-3


def test_kd_gives_no_gradient_to_its_target():
    teacher = tf.Variable(TEACHER)
    student = tf.Variable(STUDENT)
    with tf.GradientTape() as tape:
        loss = KDLoss(3.0)(teacher, student)
    g_teacher, g_student = tape.gradient(loss, [teacher, student])
    assert g_teacher is None or np.all(g_teacher.numpy() == 0)
    assert np.abs(g_student.numpy()).sum() > 0


@pytest.mark.parametrize("epoch, expected", [(0, np.exp(-5.0)), (40, np.exp(-1.25)), (80, 1.0), (120, 1.0)])
def test_rampup_weight(epoch, expected):
    assert float(rampup_weight(epoch, 80)) == pytest.approx(expected, rel=1e-6)


def test_rampup_disabled_is_one():
    assert float(rampup_weight(0, 0)) == 1.0


def test_multistep_decay_at_recipe_milestones():
    schedule = MultiStepDecay(0.1, steps_per_epoch=10, milestones=(150, 225))
    values = [float(schedule(epoch * 10)) for epoch in (0, 149, 150, 224, 225, 299)]
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert MultiStepDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_kd_loss_serializes():
    loss = KDLoss(temperature=2.0, epsilon=0.0)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (clone.temperature, clone.epsilon) == (2.0, 0.0)


@pytest.mark.parametrize("kwargs, match", [({"temperature": 0}, "temperature"), ({"epsilon": -1}, "epsilon")])
def test_bad_kd_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KDLoss(**kwargs)
