"""What every dataset source provides to the registry and the input pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

    from mfef_keras.data.info import DatasetInfo


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation: pad, random crop back to the image size, optional horizontal flip.

    Args:
        pad: pixels added on each side before the random crop.
        pad_mode: ``"CONSTANT"`` pads with black (raw value 0, as PyTorch's ``RandomCrop(padding=...)``);
            ``"REFLECT"`` mirrors the border.
        flip: whether to flip left-right with probability 1/2.
    """

    pad: int
    pad_mode: Literal["CONSTANT", "REFLECT"]
    flip: bool


class DatasetSource(Protocol):
    """A dataset the registry can serve: its description, its augmentation and its raw examples.

    `raw` feeds the tf.data pipeline and needs TensorFlow; `raw_arrays` feeds the numpy pipeline and
    `mfef_keras.data.load_arrays`, and needs TensorFlow only where the source reads through it (CIFAR).
    """

    augmentation: Augmentation

    def info(self) -> DatasetInfo:
        """The dataset's `DatasetInfo`."""

    def raw(self, split: str, indices: np.ndarray | None) -> tf.data.Dataset:
        """The examples of ``split`` at ``indices`` (increasing; all if None), in the split's fixed order.

        Elements are ``(uint8 image of shape info().image_shape, int32 label)``; ``split`` is one of
        ``info().splits``.
        """

    def raw_arrays(self, split: str, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The examples `raw` yields, in its order, as uint8 images ``(N, *info().image_shape)`` and int32 labels."""

    def labels(self, split: str) -> np.ndarray:
        """The int32 labels of ``split`` in that order, read without decoding images where possible."""
