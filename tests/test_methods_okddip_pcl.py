"""OKDDip and PCL: their losses on fixed logits against the papers' formulas in NumPy, what each detaches, the
attention head, PCL's temporal means (the EMA step on every backend, and across a checkpoint resume)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mfef_keras.distill import OnlineDistiller, method_class
from mfef_keras.models import build_students
from mfef_keras.training.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers import run_on_jax
from tests.test_distiller import _fit_on_one_device_and_mirrored

CLASSES = 5
T = 3.0
EPS = 1e-7


def _softmax(z, t=1.0, axis=-1):
    e = np.exp(z / t - (z / t).max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _ce(z, y):
    return float(np.mean(-np.log(_softmax(z)[np.arange(len(y)), y])))


def _kl(target, student, t=T):
    """``T^2 KL(target || softmax(student / T))``, the target a distribution smoothed by 1e-7 (the official code's)."""
    q = target + EPS
    return float(t * t * np.mean(np.sum(q * (np.log(q) - np.log(_softmax(student, t))), -1)))


def _logits(n=3, batch=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = [rng.normal(scale=2.0, size=(batch, CLASSES)).astype("float32") for _ in range(n)]
    return logits, rng.integers(0, CLASSES, size=batch)


def _attention(batch, peers, seed=0):
    return _softmax(np.random.default_rng(seed).normal(size=(batch, peers, peers))).astype("float32")


def _distiller(method, n=3):
    students = build_students("resnet8", CLASSES, num_students=n, base_width=8, input_shape=(16, 16, 3))
    return OnlineDistiller(students, method=method, rampup_epochs=0)


def _batch(size=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(size, 16, 16, 3)).astype("float32"), rng.integers(0, CLASSES, size=size)


def test_okddip_peers_learn_their_attention_targets_and_the_last_student_the_peers_mean():
    z, y = _logits(n=4)
    attention = _attention(len(y), 3)
    weight = 0.4
    terms = {
        k: float(v) for k, v in method_class("okddip")().loss_terms(y, z, {"attention": attention}, weight).items()
    }
    soft = np.stack([_softmax(zi, T) for zi in z[:3]], axis=1)  # (batch, peer, class)
    # t_a = sum_b alpha_ab p_b, each peer its own row of weights.
    targets = np.einsum("bij,bjc->bic", attention, soft)
    expected_kd = [_kl(targets[:, a], z[a]) for a in range(3)] + [_kl(soft.mean(1), z[3])]
    for i, value in enumerate(expected_kd):
        assert terms[f"kd_s{i}"] == pytest.approx(value, rel=1e-5)
    expected = sum(_ce(zi, y) for zi in z) + weight * sum(expected_kd)
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)
    assert terms["kd_weight"] == pytest.approx(weight)
    # Distinct rows give the peers distinct targets.
    assert not np.allclose(targets[:, 0], targets[:, 1])


def test_okddip_attention_trains_while_the_peers_predictions_and_the_leaders_target_are_detached():
    z, y = _logits(n=3, seed=2)
    variables = [tf.Variable(zi) for zi in z]
    attention = tf.Variable(_attention(len(y), 2, seed=3))
    with tf.GradientTape(persistent=True) as tape:
        terms = method_class("okddip")().loss_terms(y, variables, {"attention": attention}, 1.0)
    assert np.abs(tape.gradient(terms["kd_s0"], attention).numpy()).sum() > 0
    assert np.abs(tape.gradient(terms["kd_s0"], variables[0]).numpy()).sum() > 0
    assert tape.gradient(terms["kd_s0"], variables[1]) is None
    # The leader's term moves the leader only.
    assert tape.gradient(terms["kd_s2"], variables[0]) is None and tape.gradient(terms["kd_s2"], attention) is None
    assert np.abs(tape.gradient(terms["kd_s2"], variables[2]).numpy()).sum() > 0


def test_okddip_attention_is_the_softmax_of_query_key_products_of_the_peers_pooled_features():
    distiller = _distiller("okddip")
    images, _ = _batch(4)
    outputs = distiller.students_net(images, training=False)
    features = [np.asarray(f) for f in outputs[0::2]]
    _, extras = distiller._forward(images, training=False)
    attention = np.asarray(extras["attention"])
    assert attention.shape == (4, 2, 2) and np.allclose(attention.sum(-1), 1, atol=1e-6)
    # Equal-width peers share one query and one key map, as in the paper; the leader's map is not read.
    query = distiller.fusion.get_layer("query").kernel.numpy()
    key = distiller.fusion.get_layer("key").kernel.numpy()
    assert query.shape == (features[0].shape[-1], features[0].shape[-1] // 8)
    pooled = np.stack([f.mean(axis=(1, 2)) for f in features[:2]], axis=1)
    expected = _softmax(np.einsum("bid,bjd->bij", pooled @ query, pooled @ key))
    np.testing.assert_allclose(attention, expected, rtol=1e-4, atol=1e-6)


def test_okddip_peers_of_different_widths_get_a_query_and_key_map_each():
    head = method_class("okddip")().build_head([(None, 8, 8, 128), (None, 8, 8, 64), (None, 8, 8, 64)], CLASSES)
    kernels = {layer.name: tuple(layer.kernel.shape) for layer in head.layers if hasattr(layer, "kernel")}
    # The narrowest peer sets the width (64 / 8); the leader's 64 channels are no input of the attention.
    assert kernels == {"s0_query": (128, 8), "s0_key": (128, 8), "s1_query": (64, 8), "s1_key": (64, 8)}
    assert len(head.inputs) == 2


def test_okddip_needs_two_peers_and_a_leader():
    students = build_students("resnet8", CLASSES, num_students=2, base_width=4, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="okddip.*at least 3 students"):
        OnlineDistiller(students, method="okddip")


def test_pcl_peers_learn_from_the_ensemble_and_the_other_peers_temporal_means():
    z, y = _logits(n=3, seed=4)
    fused = _logits(n=1, seed=5)[0][0]
    means = _logits(n=3, seed=6)[0]
    extras = {"fused": fused} | {f"mean_s{i}": m for i, m in enumerate(means)}
    weight = 0.3
    terms = {k: float(v) for k, v in method_class("pcl")().loss_terms(y, z, extras, weight).items()}
    pe = [_kl(_softmax(fused, T), zi) for zi in z]
    pm = [np.mean([_kl(_softmax(means[j], T), z[i]) for j in range(3) if j != i]) for i in range(3)]
    for i in range(3):
        assert terms[f"kd_s{i}"] == pytest.approx(pe[i], rel=1e-5)
        assert terms[f"kd_mean_s{i}"] == pytest.approx(pm[i], rel=1e-5)
    assert terms["ce_fused"] == pytest.approx(_ce(fused, y), rel=1e-5)
    expected = sum(_ce(zi, y) for zi in z) + _ce(fused, y) + weight * (sum(pe) + sum(pm))
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)


def test_pcl_teachers_get_no_gradient_from_the_kd_terms():
    z, y = _logits(n=2, seed=7)
    variables = [tf.Variable(zi) for zi in z]
    teachers = {"fused": tf.Variable(z[0] + z[1])} | {f"mean_s{i}": tf.Variable(zi * 2) for i, zi in enumerate(z)}
    with tf.GradientTape(persistent=True) as tape:
        terms = method_class("pcl")().loss_terms(y, variables, teachers, 1.0)
    for name in ("kd_s0", "kd_mean_s0"):
        assert all(tape.gradient(terms[name], v) is None for v in teachers.values())
        assert tape.gradient(terms[name], variables[1]) is None
        assert np.abs(tape.gradient(terms[name], variables[0]).numpy()).sum() > 0


def test_pcl_temporal_mean_is_the_true_average_then_an_ema_at_0_999():
    distiller = _distiller("pcl", n=2)
    method, averages, students = distiller.online_method, distiller.averages, distiller.students_net
    floats = [i for i, v in enumerate(students.weights) if "float" in str(v.dtype)]
    start = [np.asarray(v).copy() for v in averages.weights]
    for v in students.weights:
        v.assign(np.asarray(v) + 1.0)
    method.update_averages(averages, students, tf.constant(4))
    for i in floats:
        # Step 4 of mean teacher's schedule: a = min(1 - 1/4, 0.999) = 0.75.
        np.testing.assert_allclose(np.asarray(averages.weights[i]), 0.75 * start[i] + 0.25 * (start[i] + 1), atol=1e-6)
    before = [np.asarray(v).copy() for v in averages.weights]
    method.update_averages(averages, students, tf.constant(10**6))
    now = np.asarray(students.weights[floats[0]])
    np.testing.assert_allclose(
        np.asarray(averages.weights[floats[0]]), 0.999 * before[floats[0]] + 0.001 * now, atol=1e-6
    )


def test_pcl_averages_are_a_renamed_non_trainable_copy_the_optimisers_never_see():
    distiller = _distiller("pcl", n=2)
    paths = {v.path for v in distiller.students_net.weights}
    assert not paths & {v.path for v in distiller.averages.weights}
    assert not {id(v) for v in distiller.averages.weights} & {id(v) for v in distiller.trainable_variables}
    assert {id(v) for v in distiller.averages.weights} <= {id(v) for v in distiller.non_trainable_variables}
    for a, b in zip(distiller.averages.weights, distiller.students_net.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _distiller("ffl", n=2).averages is None


def _two_steps(distiller, images, labels):
    """Fit two one-batch epochs; the students' float weights after each and the averages at the end."""
    distiller.compile(learning_rate=0.05)
    snapshots = []
    for epoch in range(2):
        distiller.fit(images, labels, batch_size=len(images), epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        snapshots.append([np.asarray(v).copy() for v in distiller.students_net.weights])
    return snapshots, [np.asarray(v).copy() for v in distiller.averages.weights]


def _check_two_step_average(snapshots, averages):
    first, second = snapshots
    for a, s1, s2 in zip(averages, first, second):
        if np.issubdtype(a.dtype, np.floating):
            # Step 1 copies the weights (a = 0), step 2 averages the two (a = 1/2).
            np.testing.assert_allclose(a, 0.5 * s1 + 0.5 * s2, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(s1, s2) for s1, s2 in zip(first, second))


def test_pcl_train_step_updates_the_temporal_means_after_the_optimisers():
    images, labels = _batch()
    snapshots, averages = _two_steps(_distiller("pcl", n=2), images, labels)
    _check_two_step_average(snapshots, averages)


# About 8 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_pcl_temporal_means_survive_a_checkpoint_resume(tmp_path):
    images, labels = _batch()
    trained = _distiller("pcl", n=2)
    _two_steps(trained, images, labels)
    save_checkpoint(tmp_path, trained, {"epoch": 2})
    resumed = _distiller("pcl", n=2)
    resumed.compile(learning_rate=0.05, steps_per_epoch=1)
    resumed.prepare()
    assert load_checkpoint(tmp_path, resumed) == {"epoch": 2}
    for a, b in zip(trained.averages.weights, resumed.averages.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The resumed run goes on averaging at step 3 (a = 2/3), from the restored means.
    restored = [np.asarray(v).copy() for v in resumed.averages.weights]
    resumed.fit(images, labels, batch_size=len(images), epochs=3, initial_epoch=2, verbose=0)
    for a, before, s in zip(resumed.averages.weights, restored, resumed.students_net.weights):
        if "float" in str(a.dtype):
            np.testing.assert_allclose(np.asarray(a), before * 2 / 3 + np.asarray(s) / 3, rtol=1e-5, atol=1e-6)


_JAX_EMA = """
import numpy as np
from tests.test_methods_okddip_pcl import _batch, _check_two_step_average, _distiller, _two_steps

images, labels = _batch()
_check_two_step_average(*_two_steps(_distiller("pcl", n=2), images, labels))
print("ok")
"""


# A JAX child process (18 s): out of the default suite (kept under 10 minutes), run by .ci/run's slow step, beside
# every method's JAX step.
@pytest.mark.slow
@pytest.mark.needs_jax
def test_pcl_jax_step_returns_the_new_temporal_means_in_the_non_trainable_state():
    assert run_on_jax(_JAX_EMA).split() == ["ok"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["okddip", "pcl"])
def test_mirrored_strategy_matches_one_device(method):
    (single, h1), (mirrored, h2) = _fit_on_one_device_and_mirrored(method)
    for key in ("loss", "kd_s0", "kd_s1"):
        assert h2.history[key][0] == pytest.approx(h1.history[key][0], rel=1e-4, abs=1e-6)
    # The weights include PCL's temporal means, averaged on each replica from the same mirrored values.
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
