import keras
import numpy as np
import pytest
import tensorflow as tf

from mfef_keras.layers import BatchNorm
from tests.helpers import check_layer


def test_batch_norm_layer(tmp_path):
    check_layer(BatchNorm(), (4, 6, 6, 8), (4, 6, 6, 8), tmp_path)


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_fused_training_step_equals_keras_batch_normalization(center, scale):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, size=(8, 5, 5, 6)).astype("float32"))
    ours = BatchNorm(center=center, scale=scale)
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=center, scale=scale)
    ours.build(x.shape)
    reference.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") ** 2 + 0.5 for w in reference.weights]
    reference.set_weights(weights)
    ours.set_weights(weights)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours = ours(x, training=True)
        y_ref = reference(x, training=True)
        upstream = tf.constant(rng.normal(size=x.shape).astype("float32"))
        loss_ours = tf.reduce_sum(y_ours * upstream)
        loss_ref = tf.reduce_sum(y_ref * upstream)
    np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), atol=2e-5)
    for a, b in zip(ours.non_trainable_weights, reference.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    grads_ours = tape.gradient(loss_ours, [x, *ours.trainable_weights])
    grads_ref = tape.gradient(loss_ref, [x, *reference.trainable_weights])
    for a, b in zip(grads_ours, grads_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours(x, training=False).numpy(), reference(x, training=False).numpy(), atol=2e-5)


def test_fused_path_under_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = BatchNorm()
    x = tf.constant(np.random.default_rng(1).normal(size=(4, 3, 3, 4)).astype("float32"))
    y = layer(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    assert np.isfinite(layer.moving_variance.numpy()).all()
