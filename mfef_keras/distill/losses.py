"""Distillation loss terms and the ramp-up weight (FFL's exact definitions)."""

from __future__ import annotations

import keras
from keras import ops

from mfef_keras import recipe


@keras.saving.register_keras_serializable(package="mfef_keras")
class KDLoss(keras.losses.Loss):
    """Soft-target distillation ``T^2 * KL(softmax(t/T) || softmax(s/T))``, per example.

    Called as ``loss(teacher_logits, student_logits)``: the teacher plays ``y_true`` and
    gets no gradient. With ``epsilon > 0`` the teacher's probabilities are smoothed by
    adding ``epsilon`` (FFL uses 1e-7) before the log, exactly as the reference code.
    As a `keras.losses.Loss`, the default reduction averages over the batch and
    scales for `tf.distribute`, so gradients stay right on any number of replicas.

    Args:
        temperature: softening temperature ``T`` (> 0).
        epsilon: smoothing added to the teacher's probabilities (>= 0).
        reduction: a `keras.losses.Loss` reduction.
        name: loss name.

    Example:
        >>> kd = KDLoss(temperature=3.0)
        >>> float(kd(keras.ops.ones((2, 5)), keras.ops.ones((2, 5)))) < 1e-5
        True
    """

    def __init__(
        self,
        temperature: float = recipe.TEMPERATURE,
        epsilon: float = 1e-7,
        reduction: str | None = "sum_over_batch_size",
        name: str = "kd",
        dtype: str | None = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if float(temperature) <= 0:
            raise ValueError(f"{type(self).__name__} temperature must be > 0, got {temperature!r}.")
        if float(epsilon) < 0:
            raise ValueError(f"{type(self).__name__} epsilon must be >= 0, got {epsilon!r}.")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        t = self.temperature
        teacher = ops.stop_gradient(ops.cast(y_true, "float32")) / t
        if self.epsilon:
            target = ops.softmax(teacher, axis=-1) + self.epsilon
            log_target = ops.log(target)
        else:
            log_target = ops.log_softmax(teacher, axis=-1)
            target = ops.exp(log_target)
        log_student = ops.log_softmax(ops.cast(y_pred, "float32") / t, axis=-1)
        return (t * t) * ops.sum(target * (log_target - log_student), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, epsilon=self.epsilon)
        return config


def rampup_weight(epoch, rampup_epochs: float):
    """FFL's sigmoid ramp-up ``exp(-5 (1 - min(epoch, R) / R)^2)``; 1 when ``rampup_epochs`` is 0.

    Args:
        epoch: the epoch index from 0 (a number or a scalar tensor).
        rampup_epochs: ``R``, the epochs until the weight reaches 1.
    """
    if rampup_epochs <= 0:
        return ops.convert_to_tensor(1.0)
    progress = ops.minimum(ops.cast(epoch, "float32"), rampup_epochs) / rampup_epochs
    return ops.exp(-5.0 * ops.square(1.0 - progress))
