"""What a model needs to know about its dataset: classes, input shape and normalisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Description of a dataset; it travels with trained students (zoo presets, exports).

    Args:
        name: registry name (``"digits"``, ``"cifar100"``, ``"folder:/path"``...).
        num_classes: number of classes.
        class_names: one name per class, in label order.
        image_shape: ``(height, width, channels)`` of the images the students take.
        mean: per-channel mean of images scaled to [0, 1].
        std: per-channel standard deviation of images scaled to [0, 1].
        splits: number of examples per split, e.g. ``{"train": 1437, "test": 360}``.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, int]

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(class_names=list(self.class_names), image_shape=list(self.image_shape))
        data.update(mean=list(self.mean), std=list(self.std))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DatasetInfo:
        return cls(
            name=data["name"],
            num_classes=int(data["num_classes"]),
            class_names=tuple(data["class_names"]),
            image_shape=tuple(int(v) for v in data["image_shape"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            splits={k: int(v) for k, v in data["splits"].items()},
        )
