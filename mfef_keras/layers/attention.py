"""Channel, spatial and dual (channel then spatial) attention: the MFEF "Dual-attention"."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="mfef_keras")
class ChannelAttention(layers.Layer):
    """Reweights channels by ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``.

    The MLP is shared between the two pooled descriptors: ``C -> C/r -> C`` with a
    ReLU in between and no biases (the CBAM form).

    Args:
        reduction: ratio ``r`` of the hidden layer; the hidden width is
            ``max(1, C // r)``.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> ChannelAttention(reduction=8)(keras.ops.ones((2, 8, 8, 64))).shape
        (2, 8, 8, 64)
    """

    def __init__(self, reduction: int = 8, **kwargs):
        super().__init__(**kwargs)
        if int(reduction) < 1:
            raise ValueError(f"ChannelAttention reduction must be an integer >= 1, got {reduction!r}.")
        self.reduction = int(reduction)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("ChannelAttention needs a known channel dimension.")
        hidden = max(1, channels // self.reduction)
        self._hidden = layers.Dense(
            hidden, use_bias=False, activation="relu", dtype=self.dtype_policy, name="mlp_hidden"
        )
        self._output = layers.Dense(channels, use_bias=False, dtype=self.dtype_policy, name="mlp_output")
        self._hidden.build((None, channels))
        self._output.build((None, hidden))

    def call(self, inputs):
        avg = ops.mean(inputs, axis=(1, 2))
        mx = ops.max(inputs, axis=(1, 2))
        weights = ops.sigmoid(self._output(self._hidden(avg)) + self._output(self._hidden(mx)))
        return inputs * weights[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction)
        return config


@keras.saving.register_keras_serializable(package="mfef_keras")
class SpatialAttention(layers.Layer):
    """Reweights positions by ``sigmoid(conv_kxk([mean_c(x), max_c(x)]))``.

    Args:
        kernel_size: odd size of the square convolution over the two channel
            statistics.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> SpatialAttention(kernel_size=7)(keras.ops.ones((2, 8, 8, 64))).shape
        (2, 8, 8, 64)
    """

    def __init__(self, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"SpatialAttention kernel_size must be a positive odd integer, got {kernel_size!r}.")
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        self._conv = layers.Conv2D(
            1, self.kernel_size, padding="same", use_bias=False, dtype=self.dtype_policy, name="conv"
        )
        self._conv.build((*input_shape[:-1], 2))

    def call(self, inputs):
        stats = ops.concatenate(
            [ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)], axis=-1
        )
        return inputs * ops.sigmoid(self._conv(stats))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="mfef_keras")
class DualAttention(layers.Layer):
    """Channel attention followed by spatial attention.

    Args:
        reduction: channel-attention reduction ratio (see `ChannelAttention`).
        kernel_size: spatial-attention kernel size (see `SpatialAttention`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> DualAttention(reduction=8, kernel_size=7)(keras.ops.ones((2, 8, 8, 64))).shape
        (2, 8, 8, 64)
    """

    def __init__(self, reduction: int = 8, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)
        self.kernel_size = int(kernel_size)
        self.channel_attention = ChannelAttention(self.reduction, dtype=self.dtype_policy, name="channel")
        self.spatial_attention = SpatialAttention(self.kernel_size, dtype=self.dtype_policy, name="spatial")

    def build(self, input_shape):
        for sublayer in (self.channel_attention, self.spatial_attention):
            if not sublayer.built:
                sublayer.build(input_shape)

    def call(self, inputs):
        return self.spatial_attention(self.channel_attention(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, kernel_size=self.kernel_size)
        return config
