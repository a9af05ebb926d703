"""What every dataset source provides to the registry and the input pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
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
    """A dataset the registry can serve: its description, its augmentation and its raw examples."""

    augmentation: Augmentation

    def info(self) -> DatasetInfo:
        """The dataset's `DatasetInfo`."""

    def raw(self, split: str, limit: int | None) -> tf.data.Dataset:
        """The first ``limit`` (all if None) examples of ``split`` in a fixed order.

        Elements are ``(uint8 image of shape info().image_shape, int32 label)``; ``split`` has been
        checked against ``info().splits`` by the caller.
        """
