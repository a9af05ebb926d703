"""Channel split-and-concatenate multi-scale block (the "Multi-scale Feature Extraction" of MFEF)."""

from __future__ import annotations

import keras
from keras import layers, ops

from mfef_keras.layers.batch_norm import BatchNorm


@keras.saving.register_keras_serializable(package="mfef_keras")
class MultiScaleBlock(layers.Layer):
    """Res2Net-style multi-scale block that divides and re-concatenates channels.

    The (optionally projected) input is split into ``splits`` channel groups
    ``x_1..x_s``; ``y_1 = x_1``, ``y_2 = K_2(x_2)`` and ``y_k = K_k(x_k + y_{k-1})``,
    where each ``K`` is a 3x3 conv + BatchNorm + ReLU. The outputs are concatenated,
    mixed by a 1x1 conv + BatchNorm and added to the block input, so every group sees
    a different receptive field.

    Args:
        splits: number of channel groups ``s`` (at least 2); the projected channels
            must be divisible by it.
        filters: output channels; ``None`` keeps the input's channel count.
        input_projection: apply a 1x1 conv + BatchNorm + ReLU before splitting.
        sync_batchnorm: synchronise BatchNorm statistics across `tf.distribute`
            replicas (TensorFlow backend only).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> block = MultiScaleBlock(splits=4)
        >>> block(keras.ops.ones((2, 8, 8, 64))).shape
        (2, 8, 8, 64)
    """

    def __init__(
        self,
        splits: int = 4,
        filters: int | None = None,
        input_projection: bool = True,
        sync_batchnorm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(splits) < 2:
            raise ValueError(f"MultiScaleBlock splits must be an integer >= 2, got {splits!r}.")
        if filters is not None and int(filters) < 1:
            raise ValueError(f"MultiScaleBlock filters must be a positive integer or None, got {filters!r}.")
        self.splits = int(splits)
        self.filters = None if filters is None else int(filters)
        self.input_projection = bool(input_projection)
        self.sync_batchnorm = bool(sync_batchnorm)

    def _bn(self, name):
        return BatchNorm(synchronized=self.sync_batchnorm, dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("MultiScaleBlock needs a known channel dimension.")
        out_channels = self.filters or channels
        if channels % self.splits:
            raise ValueError(
                f"MultiScaleBlock cannot split {channels} channels into splits={self.splits} "
                f"equal groups; choose splits that divide {channels}."
            )
        width = channels // self.splits
        self._projection = None
        if self.input_projection:
            self._projection = [
                layers.Conv2D(channels, 1, use_bias=False, dtype=self.dtype_policy, name="proj_conv"),
                self._bn("proj_bn"),
                layers.ReLU(dtype=self.dtype_policy, name="proj_relu"),
            ]
            shape = tuple(input_shape)
            for layer in self._projection:
                layer.build(shape)
        group_shape = (*input_shape[:-1], width)
        self._group_convs = []
        self._group_bns = []
        for k in range(1, self.splits):
            conv = layers.Conv2D(
                width, 3, padding="same", use_bias=False, dtype=self.dtype_policy, name=f"group{k}_conv"
            )
            bn = self._bn(f"group{k}_bn")
            conv.build(group_shape)
            bn.build(group_shape)
            self._group_convs.append(conv)
            self._group_bns.append(bn)
        self._fuse_conv = layers.Conv2D(out_channels, 1, use_bias=False, dtype=self.dtype_policy, name="fuse_conv")
        self._fuse_bn = self._bn("fuse_bn")
        self._fuse_conv.build(tuple(input_shape))
        self._fuse_bn.build((*input_shape[:-1], out_channels))
        self._shortcut = None
        if out_channels != channels:
            self._shortcut = layers.Conv2D(out_channels, 1, use_bias=False, dtype=self.dtype_policy, name="shortcut")
            self._shortcut.build(tuple(input_shape))

    def call(self, inputs, training=None):
        x = inputs
        if self._projection is not None:
            x = self._projection[0](x)
            x = self._projection[1](x, training=training)
            x = self._projection[2](x)
        groups = ops.split(x, self.splits, axis=-1)
        outputs = [groups[0]]
        previous = None
        for group, conv, bn in zip(groups[1:], self._group_convs, self._group_bns):
            y = group if previous is None else group + previous
            previous = ops.relu(bn(conv(y), training=training))
            outputs.append(previous)
        y = self._fuse_bn(self._fuse_conv(ops.concatenate(outputs, axis=-1)), training=training)
        shortcut = inputs if self._shortcut is None else self._shortcut(inputs)
        return y + shortcut

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters or input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            splits=self.splits,
            filters=self.filters,
            input_projection=self.input_projection,
            sync_batchnorm=self.sync_batchnorm,
        )
        return config
