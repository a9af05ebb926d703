"""scikit-learn's handwritten digits (1,797 real 8x8 images, no network): the package's embedded dataset."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.source import Augmentation

if TYPE_CHECKING:
    import tensorflow as tf

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# Of the train split after upscaling (see `_split_arrays`); tests/test_data.py recomputes them.
MEAN = (0.3054,)
STD = (0.3237,)
SPLITS = {"train": 1437, "test": 360}


class DigitsSource:
    """The digits, upscaled once to 32x32x1 uint8 and split 80/20, stratified, with a fixed seed.

    Augmentation: random crop after 2-pixel zero padding, no flip (digits are not flip-invariant).
    """

    augmentation = Augmentation(pad=2, pad_mode="CONSTANT", flip=False)

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="digits",
            num_classes=10,
            class_names=tuple(str(d) for d in range(10)),
            image_shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
            mean=MEAN,
            std=STD,
            splits=dict(SPLITS),
        )

    def raw(self, split: str, indices: np.ndarray | None) -> tf.data.Dataset:
        import tensorflow as tf  # on use: the numpy pipeline reads `raw_arrays` without TensorFlow

        return tf.data.Dataset.from_tensor_slices(self.raw_arrays(split, indices))

    def raw_arrays(self, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        images, labels = _split_arrays()[split]
        if indices is None:
            return images, labels
        return images[indices], labels[indices]

    def labels(self, split: str) -> np.ndarray:
        return _split_arrays()[split][1]


@functools.cache
def _split_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    digits = load_digits()
    # Pixel values are 0..16; bilinear upscaling keeps them inside that range.
    scaled = digits.images[..., np.newaxis].astype(np.float32) * (255.0 / 16.0)
    resized = resize_bilinear(scaled, IMAGE_SIZE, IMAGE_SIZE)
    images = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    # train_test_split shuffles, so any prefix of a split (what `limit` takes) is a random sample.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resizing with half-pixel centres and no antialiasing: ``tf.image.resize``'s default, without TensorFlow.

    The same float32 operations as TensorFlow's kernel, so the digits (whose upscaling is exact in float32
    anyway) come out byte for byte as they did when TensorFlow resized them.

    Args:
        images: ``(n, in_height, in_width, channels)`` float32 images.
        height: output height.
        width: output width.
    """

    def source_pixels(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Output pixel i samples the input at (i + 0.5) * in/out - 0.5, between two clamped neighbours.
        position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * np.float32(in_size / out_size)
        position -= np.float32(0.5)
        below = np.floor(position)
        lower = np.maximum(below, 0).astype(np.intp)
        upper = np.minimum(np.ceil(position), in_size - 1).astype(np.intp)
        return lower, upper, position - below

    top, bottom, y_weight = source_pixels(images.shape[1], height)
    left, right, x_weight = source_pixels(images.shape[2], width)
    x_weight = x_weight[np.newaxis, np.newaxis, :, np.newaxis]
    upper_rows, lower_rows = images[:, top], images[:, bottom]
    upper = upper_rows[:, :, left] + (upper_rows[:, :, right] - upper_rows[:, :, left]) * x_weight
    lower = lower_rows[:, :, left] + (lower_rows[:, :, right] - lower_rows[:, :, left]) * x_weight
    return upper + (lower - upper) * y_weight[np.newaxis, :, np.newaxis, np.newaxis]
