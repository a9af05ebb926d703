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


def test_bfloat16_training_step_runs_the_fused_kernel_in_bfloat16_and_equals_keras():
    # The fused kernel takes the bfloat16 map as it is (float32 statistics inside) instead of casting it
    # to float32 and back: the same numbers as Keras's reference path up to bfloat16 rounding of the
    # output, and no full-size cast in the compiled step.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    rng = np.random.default_rng(2)
    x = tf.cast(tf.constant(rng.normal(2.0, 3.0, size=(16, 6, 6, 8)).astype("float32")), tf.bfloat16)
    upstream = tf.constant(rng.normal(size=x.shape).astype("float32"))
    ours = BatchNorm()
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours.build(x.shape)
    reference.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") ** 2 + 0.5 for w in reference.weights]
    ours.set_weights(weights)
    reference.set_weights(weights)

    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        return y, tape.gradient(loss, [x, *layer.trainable_weights])

    compiled = tf.function(step)
    graph = compiled.get_concrete_function(ours).graph
    full_size_casts = [
        op.name
        for op in graph.get_operations()
        if op.type == "Cast" and op.outputs[0].shape.rank == 4 and ours.name in op.name
    ]
    assert not full_size_casts
    (y_ours, grads_ours), (y_ref, grads_ref) = compiled(ours), tf.function(step)(reference)
    assert y_ours.dtype == tf.bfloat16 and grads_ours[0].dtype == tf.bfloat16

    def close(a, b, rtol):
        a, b = (np.asarray(tf.cast(v, tf.float32)) for v in (a, b))
        np.testing.assert_allclose(a, b, atol=rtol * np.abs(b).max())

    close(y_ours, y_ref, 2**-8)
    for a, b in zip(grads_ours, grads_ref):
        close(a, b, 2**-7)
    for a, b in zip(ours.non_trainable_weights, reference.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
