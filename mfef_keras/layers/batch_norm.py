"""BatchNormalization that trains with TensorFlow's fused kernel when it can."""

from __future__ import annotations

import keras
from keras import layers

from mfef_keras.layers.conv_bn import BN_EPSILON, BN_MOMENTUM


@keras.saving.register_keras_serializable(package="mfef_keras")
class BatchNorm(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with the recipe's defaults and a fused training path.

    Keras 3 computes BatchNorm on TensorFlow as separate moment, normalisation and
    gradient ops; on a CPU that is about a fifth of a ResNet training step. On the
    TensorFlow backend, a training call on a 4-D channels-last map uses TensorFlow's
    fused kernel instead, with the same result and the same moving-statistics update
    (the batch variance converted back to Keras's biased estimate). Every other case
    (other backends, inference, masks, synchronised or renormalised BatchNorm) is
    Keras's own code, so the layer loads and runs on any backend.

    Args:
        momentum: moving-average momentum (0.9, PyTorch's 0.1).
        epsilon: variance epsilon (PyTorch's 1e-5).
        **kwargs: `keras.layers.BatchNormalization` arguments.

    Example:
        >>> BatchNorm()(keras.ops.ones((2, 4, 4, 8)), training=True).shape
        (2, 4, 4, 8)
    """

    def __init__(self, momentum: float = BN_MOMENTUM, epsilon: float = BN_EPSILON, **kwargs):
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)

    def _fusable(self, inputs, training, mask) -> bool:
        return (
            bool(training)
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.backend() == "tensorflow"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # The fused kernel takes float16 and bfloat16 maps as they are, with float32 scale, offset and
        # statistics, and computes in float32 inside (as Keras's path does after upcasting). Casting a
        # bfloat16 map to float32 and the result back instead costs two full-size casts forward and two
        # backward per layer (an eighth of a mixed_bfloat16 step), and keeps TensorFlow from fusing the
        # BatchNorm with its ReLU.
        x = inputs if inputs.dtype in (tf.float16, tf.bfloat16, tf.float32) else tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        scale = tf.cast(self.gamma.value, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta.value, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        count = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)
