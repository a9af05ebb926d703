"""Per-channel normalisation of raw 0-255 images, so preprocessing can travel inside a model."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="mfef_keras")
class ImageNormalization(layers.Layer):
    """Maps raw images with values in 0..255 (any dtype) to ``(x / 255 - mean) / std``.

    Args:
        mean: per-channel mean of images scaled to [0, 1].
        std: per-channel standard deviation of images scaled to [0, 1] (all > 0).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> norm = ImageNormalization(mean=(0.5,), std=(0.25,))
        >>> float(norm(keras.ops.full((1, 2, 2, 1), 255.0))[0, 0, 0, 0])
        2.0
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need one value per channel; got mean={self.mean}, std={self.std}.")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}.")

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != len(self.mean):
            raise ValueError(
                f"ImageNormalization was configured for {len(self.mean)} channel(s) but got images of shape "
                f"{tuple(input_shape)}."
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype) / 255.0
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std))
        return config
