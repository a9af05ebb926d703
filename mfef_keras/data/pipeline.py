"""The tf.data input pipeline shared by all datasets: cache, shuffle, augment, normalise, batch, prefetch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mfef_keras.data.source import Augmentation

# Raw uint8 examples up to this size are cached in memory (CIFAR train: 150 MB, CINIC-10 train: 276 MB);
# the shuffle buffer is capped by the same budget for larger datasets.
CACHE_BUDGET_BYTES = 2 * 1024**3


def normalise(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """``(images / 255 - mean) / std`` in float32: the formula of `mfef_keras.layers.ImageNormalization`.

    Args:
        images: raw images with values in 0..255, channels last (any dtype, any leading shape).
        mean: per-channel mean of images scaled to [0, 1].
        std: per-channel standard deviation of images scaled to [0, 1].
    """
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def augment(image: tf.Tensor, seed: tf.Tensor, augmentation: Augmentation) -> tf.Tensor:
    """Pad, crop back to the original size at a random offset and maybe flip one raw image.

    Stateless ops: the result depends only on ``image`` and ``seed``, so parallel maps stay deterministic.

    Args:
        image: one ``(height, width, channels)`` image (raw values, any dtype).
        seed: int32/int64 tensor of shape ``(4,)``; the first two values seed the crop, the last two the flip.
        augmentation: what to do.
    """
    shape = tf.shape(image)
    pad = augmentation.pad
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=augmentation.pad_mode)
    image = tf.image.stateless_random_crop(padded, shape, seed=seed[:2])
    if augmentation.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed[2:])
    return image


def build_pipeline(
    raw: tf.data.Dataset,
    *,
    num_examples: int,
    image_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    augmentation: Augmentation,
    batch_size: int,
    training: bool,
    seed: int,
    cache: bool,
    reshuffle_each_iteration: bool = True,
) -> tf.data.Dataset:
    """Batches of ``(float32 normalised images, int32 labels)`` from raw ``(uint8 image, int32 label)`` examples.

    Caching keeps the decoded uint8 images (4x smaller than float32), before augmentation and normalisation:
    the recipe's zero padding means black pixels, so augmentation must see raw values. Shuffling and the
    augmentation seeds are drawn afresh each epoch but from ``seed``, so two pipelines built with the same
    seed (under the same TensorFlow global seed, e.g. `keras.utils.set_random_seed`) yield identical batches.
    The last partial batch is kept, for training too, so every example is seen each epoch (as PyTorch's
    default ``drop_last=False`` in the reference recipe).

    Args:
        raw: unbatched raw examples in a fixed order.
        num_examples: how many examples ``raw`` holds (an upper bound is fine).
        image_shape: ``(height, width, channels)`` of the raw images.
        mean: per-channel mean of images scaled to [0, 1].
        std: per-channel standard deviation of images scaled to [0, 1].
        augmentation: training augmentation.
        batch_size: examples per batch.
        training: shuffle and augment when True.
        seed: seed of the shuffle order and of the augmentation.
        cache: keep the decoded examples in memory after the first epoch, if they fit in `CACHE_BUDGET_BYTES`.
        reshuffle_each_iteration: a new order and new augmentation seeds for each iterator.
    """
    example_bytes = int(np.prod(image_shape))
    if cache and num_examples * example_bytes <= CACHE_BUDGET_BYTES:
        raw = raw.cache()
    if training:
        buffer = max(1, min(num_examples, CACHE_BUDGET_BYTES // example_bytes))
        shuffled = raw.shuffle(buffer, seed=seed, reshuffle_each_iteration=reshuffle_each_iteration)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle_each_iteration).batch(4)
        dataset = tf.data.Dataset.zip(shuffled, seeds).map(
            lambda example, example_seed: (
                normalise(augment(example[0], example_seed, augmentation), mean, std),
                example[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        dataset = raw.map(
            lambda image, label: (normalise(image, mean, std), label),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
