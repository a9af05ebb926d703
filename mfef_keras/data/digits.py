"""scikit-learn's handwritten digits (1,797 real 8x8 images, no network): the package's embedded dataset."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.source import Augmentation

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
        images, labels = _split_arrays()[split]
        if indices is not None:
            images, labels = images[indices], labels[indices]
        return tf.data.Dataset.from_tensor_slices((images, labels))

    def labels(self, split: str) -> np.ndarray:
        return _split_arrays()[split][1]


@functools.cache
def _split_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    digits = load_digits()
    # Pixel values are 0..16; bilinear upscaling keeps them inside that range.
    scaled = digits.images[..., np.newaxis].astype(np.float32) * (255.0 / 16.0)
    resized = tf.image.resize(scaled, (IMAGE_SIZE, IMAGE_SIZE), method="bilinear").numpy()
    images = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    # train_test_split shuffles, so any prefix of a split (what `limit` takes) is a random sample.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}
