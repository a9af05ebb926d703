"""The feature-fusion head: fused logits from the concatenated feature maps of all students."""

from __future__ import annotations

import keras
from keras import layers, ops

from mfef_keras.layers.batch_norm import BatchNorm


@keras.saving.register_keras_serializable(package="mfef_keras")
class FusionHead(layers.Layer):
    """Fuses n feature maps into one set of logits (the FFL fusion module).

    The maps are concatenated on channels (``n * C``), then depthwise 3x3 conv
    (no bias) -> BatchNorm -> ReLU -> pointwise 1x1 conv to ``C`` (no bias) ->
    BatchNorm -> ReLU -> global average pool -> Dense(``num_classes``).

    Args:
        num_classes: number of output logits.
        filters: channels after the pointwise conv; ``None`` uses the channel
            count of one input map.
        sync_batchnorm: synchronise BatchNorm statistics across `tf.distribute`
            replicas (TensorFlow backend only).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> head = FusionHead(num_classes=100)
        >>> maps = [keras.ops.ones((2, 8, 8, 64)), keras.ops.ones((2, 8, 8, 64))]
        >>> head(maps).shape
        (2, 100)
    """

    def __init__(self, num_classes: int, filters: int | None = None, sync_batchnorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"FusionHead num_classes must be a positive integer, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.filters = None if filters is None else int(filters)
        self.sync_batchnorm = bool(sync_batchnorm)

    def build(self, input_shape):
        shapes = self._check_shapes(input_shape)
        channels = shapes[0][-1]
        total = sum(shape[-1] for shape in shapes)
        spatial = tuple(shapes[0][:-1])
        filters = self.filters or channels
        bn = dict(synchronized=self.sync_batchnorm, dtype=self.dtype_policy)
        self._depthwise = layers.DepthwiseConv2D(
            3, padding="same", use_bias=False, dtype=self.dtype_policy, name="depthwise"
        )
        self._depthwise_bn = BatchNorm(name="depthwise_bn", **bn)
        self._pointwise = layers.Conv2D(filters, 1, use_bias=False, dtype=self.dtype_policy, name="pointwise")
        self._pointwise_bn = BatchNorm(name="pointwise_bn", **bn)
        self._classifier = layers.Dense(self.num_classes, dtype=self.dtype_policy, name="classifier")
        self._depthwise.build((*spatial, total))
        self._depthwise_bn.build((*spatial, total))
        self._pointwise.build((*spatial, total))
        self._pointwise_bn.build((*spatial, filters))
        self._classifier.build((None, filters))

    def _check_shapes(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or not input_shape
            or not isinstance(input_shape[0], (list, tuple))
        ):
            raise ValueError(
                "FusionHead takes a list of 4-D feature maps (batch, height, width, channels), "
                f"got shape {input_shape!r}."
            )
        shapes = [tuple(shape) for shape in input_shape]
        for shape in shapes:
            if len(shape) != 4:
                raise ValueError(
                    f"FusionHead takes 4-D feature maps (batch, height, width, channels); got a map of shape {shape}."
                )
        spatial = {shape[1:3] for shape in shapes}
        if len(spatial) > 1:
            raise ValueError(
                f"FusionHead needs feature maps of one spatial size to concatenate them; got sizes {sorted(spatial)}."
            )
        return shapes

    def call(self, inputs, training=None):
        x = ops.concatenate(list(inputs), axis=-1)
        x = ops.relu(self._depthwise_bn(self._depthwise(x), training=training))
        x = ops.relu(self._pointwise_bn(self._pointwise(x), training=training))
        return self._classifier(ops.mean(x, axis=(1, 2)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, filters=self.filters, sync_batchnorm=self.sync_batchnorm)
        return config
