"""The normalisation the students are trained with, in numpy: for the numpy data pipeline and ``mfef predict``.

``(images / 255 - mean) / std`` in float32, operation for operation as the tf.data pipeline's `normalise` and the
`ImageNormalization` layer, so a student sees the same numbers whichever path fed it. numpy only: the inference
path has no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(images / 255 - mean) / std`` per channel, in float32.

    Args:
        images: raw images with values in 0..255, channels last (any dtype, any leading shape).
        mean: per-channel mean of images scaled to [0, 1].
        std: per-channel standard deviation of images scaled to [0, 1].
    """
    scaled = np.asarray(images, np.float32) / np.float32(255.0)
    return (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
