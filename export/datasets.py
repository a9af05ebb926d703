"""Images for validation and int8 calibration, from the package's dataset registry."""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import zip_longest

import numpy as np

from mfef_keras.export.errors import ExportError


def load_split(
    name: str, split: str, limit: int | None = None, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 NHWC images and integer labels of a dataset split.

    Args:
        name: registry name of the dataset (``"digits"``, ``"cifar100"``...).
        split: ``"train"`` or ``"test"``.
        limit: take at most this many examples.
        data_dir: where datasets live (default: the registry's).
    """
    try:
        from mfef_keras.data import load_arrays
    except ImportError as error:
        raise ExportError(f"Cannot load dataset {name!r}: the dataset registry is unavailable ({error}).") from None
    try:
        images, labels = load_arrays(name, split, data_dir=data_dir, limit=limit)
    except Exception as error:
        raise ExportError(f"Cannot load the {split!r} split of dataset {name!r}: {error}") from error
    return np.asarray(images), np.asarray(labels)


def check_classes(name: str, class_names: Sequence[str], data_dir: str | os.PathLike | None = None) -> None:
    """Refuse dataset ``name`` unless its classes are ``class_names``, in the same order.

    Args:
        name: registry name of the dataset to validate on.
        class_names: the student's classes, in label order.
        data_dir: where datasets live (default: the registry's).
    """
    try:
        from mfef_keras.data import dataset_info

        found = [str(c) for c in dataset_info(name, data_dir).class_names]
    except Exception as error:
        raise ExportError(f"Cannot read the classes of dataset {name!r}: {error}") from error
    expected = [str(c) for c in class_names]
    if found == expected:
        return
    pairs = zip_longest(found, expected, fillvalue=None)
    differences = [f"label {i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(pairs) if a != b]
    raise ExportError(
        f"Dataset {name!r} has other classes than the student: {len(found)} classes against the student's "
        f"{len(expected)}; first differences (dataset vs student): {'; '.join(differences[:3])}. "
        "Validate on a dataset with the student's classes, in the same order."
    )


def check_images(images: np.ndarray, image_shape: tuple[int, ...], what: str) -> np.ndarray:
    """``images`` as uint8 after checking they are raw NHWC images of ``image_shape``.

    Args:
        images: the images to check.
        image_shape: ``(height, width, channels)`` the model takes.
        what: where the images come from, for the error message.
    """
    images = np.asarray(images)
    if len(images) == 0:
        raise ExportError(f"{what} holds no images.")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ExportError(
            f"{what} has images of shape {tuple(images.shape[1:])}; the model takes {tuple(image_shape)} (H, W, C)."
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
            raise ExportError(f"{what} must hold raw uint8 images with values 0..255; got dtype {images.dtype}.")
        images = images.astype(np.uint8)
    return images


def sample(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """At most ``count`` images drawn without replacement (seeded), so calibration sees every class."""
    if len(images) <= count:
        return images
    return images[np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))]
