"""What a model needs to know about its dataset: classes, input shape and normalisation."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

_EXPECTED = (
    "expected name (text), num_classes (a positive whole number), class_names (that many texts), image_shape "
    "(3 positive whole numbers), mean and std (one number per channel, or one for all) and splits (name -> count)"
)


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
        """The description stored by `to_dict` (in a student's metadata, a preset, an export).

        Raises:
            ValueError: ``data`` is not such a description; the message says which entry is wrong.
        """
        problem = _problem(data)
        if problem:
            raise ValueError(f"Not a dataset description: {problem}; {_EXPECTED}.")
        return cls(
            name=data["name"],
            num_classes=data["num_classes"],
            class_names=tuple(data["class_names"]),
            image_shape=tuple(data["image_shape"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            splits=dict(data["splits"]),
        )


def _whole(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _problem(data: object) -> str | None:
    """What is wrong with ``data`` as a `DatasetInfo.to_dict`, or None."""
    if not isinstance(data, dict):
        return f"a {type(data).__name__}, not a JSON object"
    keys = ("name", "num_classes", "class_names", "image_shape", "mean", "std", "splits")
    missing = [key for key in keys if key not in data]
    if missing:
        return f"{', '.join(missing)} missing"
    names, shape, splits = data["class_names"], data["image_shape"], data["splits"]
    checks = {
        "name": isinstance(data["name"], str),
        "num_classes": _whole(data["num_classes"], 1),
        "class_names": isinstance(names, list | tuple)
        and all(isinstance(n, str) for n in names)
        and len(names) == data["num_classes"],
        "image_shape": isinstance(shape, list | tuple) and len(shape) == 3 and all(_whole(v, 1) for v in shape),
        "splits": isinstance(splits, dict) and all(isinstance(k, str) and _whole(v, 0) for k, v in splits.items()),
    }
    for key in ("mean", "std"):
        values = data[key]
        checks[key] = (
            isinstance(values, list | tuple)
            and checks["image_shape"]
            and len(values) in (1, shape[2])
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        )
    wrong = [key for key, fine in checks.items() if not fine]
    return f"{', '.join(f'{key}={data[key]!r:.60}' for key in wrong)} wrong" if wrong else None
