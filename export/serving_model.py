"""The Keras graph that gets exported: the student, with its normalisation in front when asked."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mfef_keras.export.metadata import INPUT_NAME
from mfef_keras.layers.image_normalization import ImageNormalization


def serving_model(
    student: keras.Model, image_shape: Sequence[int], mean: Sequence[float] | None, std: Sequence[float] | None
) -> keras.Model:
    """``student`` behind a uint8 input and an `ImageNormalization`, or ``student`` itself when ``mean`` is None.

    Args:
        student: normalised float32 NHWC images -> logits.
        image_shape: ``(height, width, channels)``.
        mean: per-channel mean of images scaled to [0, 1]; None exports the bare student.
        std: per-channel standard deviation of images scaled to [0, 1].
    """
    if mean is None:
        return student
    images = keras.Input(tuple(image_shape), dtype="uint8", name=INPUT_NAME)
    normalized = ImageNormalization(mean, std, name="normalization")(images)
    return keras.Model(images, student(normalized), name=f"{student.name}_uint8")


def input_spec(image_shape: Sequence[int], preprocess: bool) -> tf.TensorSpec:
    """The exported input: a batch of any size of NHWC images, raw uint8 or normalised float32."""
    dtype = tf.uint8 if preprocess else tf.float32
    return tf.TensorSpec((None, *(int(v) for v in image_shape)), dtype, name=INPUT_NAME)
