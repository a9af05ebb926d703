"""SGD with PyTorch's momentum form, the optimiser of the FFL recipe."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mfef_keras")
class PyTorchSGD(keras.optimizers.SGD):
    """SGD whose momentum buffer holds raw gradients, as `torch.optim.SGD` (dampening 0).

    PyTorch keeps ``b = m * b + g`` and steps ``w -= lr * b`` (Nesterov: ``w -= lr * (g + m * b)``)
    with the current rate; Keras's `SGD` folds the rate into its velocity (``v = m * v - lr * g``).
    The two agree at a constant rate but not after a rate change: for about ``1 / (1 - m)`` steps
    after each milestone Keras keeps moving with the old rate's velocity. The buffers are ordinary
    optimiser variables (named ``momentum``, one per trained variable).

    PyTorch's ``weight_decay`` (L2 added to the gradient, so it passes through momentum) is not an
    argument: add it to the gradient before `apply`, as `OnlineDistiller` does. Keras's own
    ``weight_decay`` is decoupled, a different optimiser, and is refused here.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: momentum factor ``m`` in ``[0, 1]``.
        nesterov: Nesterov momentum (PyTorch's ``nesterov=True``).
        **kwargs: other `keras.optimizers.Optimizer` arguments (``name``, ``clipnorm``...).

    Example:
        >>> optimizer = PyTorchSGD(0.1, momentum=0.9, nesterov=True)
        >>> w = keras.Variable([1.0])
        >>> optimizer.apply([ops.convert_to_tensor([1.0])], [w])
        >>> round(float(w.numpy()[0]), 6)  # w - 0.1 * (g + 0.9 * b) with b = g
        0.81
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(
                f"PyTorchSGD does not take weight_decay (got {kwargs['weight_decay']!r}): Keras's weight_decay "
                "is decoupled; add PyTorch's L2 term to the gradient instead (OnlineDistiller's "
                "student_weight_decay / fusion_weight_decay)."
            )
        kwargs.setdefault("name", "pytorch_sgd")
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), nesterov=bool(nesterov), **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum and keras.backend.backend() == "tensorflow" and _dense(gradient):
            return self._tensorflow_momentum_step(gradient, variable, learning_rate)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(gradient, learning_rate))
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        buffer = self.momentums[self._get_variable_index(variable)]
        # The new buffer as a tensor, so the step does not depend on reading the variable back.
        new_buffer = ops.add(ops.multiply(buffer, momentum), gradient)
        self.assign(buffer, new_buffer)
        direction = ops.add(gradient, ops.multiply(new_buffer, momentum)) if self.nesterov else new_buffer
        self.assign_sub(variable, ops.multiply(direction, learning_rate))

    def _tensorflow_momentum_step(self, gradient, variable, learning_rate):
        # TensorFlow's ApplyMomentum kernel is this update in one op (b = m * b + g, then w -= lr * b, or
        # w -= lr * g + lr * m * b with Nesterov): the generic code is about eight graph ops per variable,
        # some 2,000 per MFEF step, whose dispatch cost three times the fused kernel's (9 vs 3.5 ms for the
        # 246 variables of two ResNet-32 and the fusion path). Only the rounding of the Nesterov step's
        # last product differs. `variable` is the tf.Variable (under tf.distribute, one replica's); the
        # buffer's handle is that replica's too inside the strategy's update call.
        import tensorflow as tf

        buffer = self.momentums[self._get_variable_index(variable)]
        buffer = buffer.value if isinstance(buffer, keras.Variable) else buffer
        variable = variable.value if isinstance(variable, keras.Variable) else variable
        return tf.raw_ops.ResourceApplyMomentum(
            var=variable.handle,
            accum=buffer.handle,
            lr=tf.cast(learning_rate, variable.dtype),
            grad=tf.cast(gradient, variable.dtype),
            momentum=tf.cast(self.momentum, variable.dtype),
            use_locking=False,
            use_nesterov=self.nesterov,
        )


def _dense(gradient) -> bool:
    # Sparse gradients (tf.IndexedSlices from an embedding lookup) keep the generic update.
    return not hasattr(gradient, "indices")
