"""The normalisation the students were trained with, in numpy (the inference path has no TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(images / 255 - mean) / std`` per channel, in float32 like the `ImageNormalization` layer.

    Args:
        images: raw NHWC images with values 0..255.
        mean: per-channel mean of images scaled to [0, 1].
        std: per-channel standard deviation of images scaled to [0, 1].
    """
    scaled = np.asarray(images, np.float32) / np.float32(255.0)
    return (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
