"""The input pipeline without TensorFlow: numpy batches through a `keras.utils.PyDataset`.

It applies the augmentation of the tf.data pipeline (`mfef_keras.data.pipeline`): pad with black (raw 0) or
by reflection, crop back at a random offset, maybe flip left-right, then normalise; the last partial batch
is kept. Each batch is augmented in a few vectorised numpy operations, not image by image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import keras
import numpy as np

from mfef_keras.data.source import Augmentation
from mfef_keras.normalization import normalize

# tf.pad's mode names, as `Augmentation` spells them, to numpy.pad's (REFLECT leaves the border pixel out in both).
_PAD_MODES = {"CONSTANT": "constant", "REFLECT": "reflect"}


def augment_batch(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, augmentation: Augmentation) -> np.ndarray:
    """Pad each raw image, crop it back to its size at its offset and flip it left-right where ``flips`` says.

    Args:
        images: ``(n, height, width, channels)`` raw images.
        offsets: ``(n, 2)`` ints in ``0..2 * augmentation.pad``: the top-left corner of each crop in the padded image.
        flips: ``(n,)`` bools: which crops to flip.
        augmentation: the padding (its ``flip`` is what produced ``flips``).
    """
    pad = augmentation.pad
    count, height, width = images.shape[:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=_PAD_MODES[augmentation.pad_mode])
    rows = offsets[:, :1] + np.arange(height)
    # A flipped crop reads the padded image's columns right to left: one gather crops and flips together.
    columns = offsets[:, 1:] + np.where(flips[:, np.newaxis], np.arange(width)[::-1], np.arange(width))
    return padded[np.arange(count)[:, np.newaxis, np.newaxis], rows[:, :, np.newaxis], columns[:, np.newaxis, :]]


class NumpyBatches(keras.utils.PyDataset):
    """Batches of ``(float32 normalised NHWC images, int32 labels)`` from raw uint8 arrays held in memory.

    With ``training=True`` the examples are shuffled and augmented. The order, crop offsets and flips of a pass
    are drawn by numpy's PCG64 from ``(seed, pass)`` alone, so they are the same in every process and on every
    platform; batch ``i`` depends only on them and ``i``. A pass is a `keras.Model.fit` epoch or a ``for`` loop
    over the batches to the end; ``pass`` stays 0 unless ``reshuffle_each_iteration``.

    Args:
        images: ``(n, height, width, channels)`` raw uint8 images.
        labels: ``(n,)`` int labels.
        mean: per-channel mean of images scaled to [0, 1].
        std: per-channel standard deviation of images scaled to [0, 1].
        augmentation: training augmentation.
        batch_size: examples per batch; the last batch holds the rest.
        training: shuffle and augment.
        seed: seed of the order and the augmentation (``>= 0``).
        reshuffle_each_iteration: new draws for every pass; off, every pass sees the same batches.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augmentation: Augmentation,
        batch_size: int,
        training: bool,
        seed: int,
        reshuffle_each_iteration: bool = True,
    ) -> None:
        super().__init__()
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
        self.images = images
        self.labels = np.asarray(labels, np.int32)
        self.mean, self.std = tuple(mean), tuple(std)
        self.augmentation = augmentation
        self.batch_size = batch_size
        self.training = training
        self.seed = seed
        self.reshuffle_each_iteration = reshuffle_each_iteration
        self._pass = 0
        self._draw()

    def _draw(self) -> None:
        count = len(self.labels)
        if not self.training:
            self._order = self._offsets = self._flips = None
            return
        rng = np.random.default_rng((self.seed, self._pass))
        self._order = rng.permutation(count)
        self._offsets = rng.integers(0, 2 * self.augmentation.pad + 1, size=(count, 2))
        self._flips = rng.random(count) < 0.5 if self.augmentation.flip else np.zeros(count, bool)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            # IndexError ends a plain ``for`` loop, as the sequence protocol expects.
            raise IndexError(f"batch {index} out of range: there are {len(self)}.")
        window = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if not self.training:
            return normalize(self.images[window], self.mean, self.std), self.labels[window]
        picked = self._order[window]
        images = augment_batch(self.images[picked], self._offsets[window], self._flips[window], self.augmentation)
        return normalize(images, self.mean, self.std), self.labels[picked]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield from super().__iter__()
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        """Called by `keras.Model.fit` after each epoch: the next pass draws anew if reshuffling."""
        if self.training and self.reshuffle_each_iteration:
            self._pass += 1
            self._draw()
