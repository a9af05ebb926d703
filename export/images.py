"""Image files and ``.npy`` batches read for ``mfef predict``, checked against the model's input size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfef_keras._regular_files import open_regular
from mfef_keras.data.image_files import ImageFileError, load_image
from mfef_keras.export.errors import PredictError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Modes whose pixels are 8-bit channels; palette and 1-bit images are first expanded to one of them.
_EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA")
_CHANNEL_MODES = {1: "L", 3: "RGB"}


def load_images(
    paths: Sequence[str | Path], image_shape: Sequence[int], convert_channels: bool = False
) -> tuple[np.ndarray, list[str], list[str]]:
    """Read PNG/JPEG files and ``.npy`` batches into one uint8 NHWC batch.

    Images are never resized: one of another size is an error. Its channels are converted
    (RGB/RGBA <-> grayscale) only with ``convert_channels``, and each conversion is reported. Files are read as
    for training (`mfef_keras.data.image_files.load_image`): regular files only, at most
    `MAX_IMAGE_PIXELS` pixels, 16-bit grayscale scaled to 8 bits.

    Args:
        paths: image files and/or ``.npy`` files holding ``(N, H, W, C)`` or ``(H, W, C)`` uint8 arrays.
        image_shape: ``(height, width, channels)`` the model takes.
        convert_channels: convert images whose channel count differs from the model's.

    Returns:
        ``(images, names, notes)``: the batch, a name per image (``file`` or ``file[i]``), and one note per
        conversion made.
    """
    shape = tuple(int(v) for v in image_shape)
    batches, names, notes = [], [], []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if suffix == ".npy":
            batch = _load_npy(path, shape)
            names += [f"{path}[{i}]" for i in range(len(batch))]
        elif suffix in IMAGE_SUFFIXES:
            image, note = _load_image(path, shape, convert_channels)
            batch = image[None]
            names.append(str(path))
            notes += [note] if note else []
        else:
            raise PredictError(
                f"{path}: unsupported file type {suffix or '(none)'}; give PNG/JPEG images or a .npy batch."
            )
        batches.append(batch)
    if not batches:
        raise PredictError("No images given.")
    return np.concatenate(batches), names, notes


def _load_npy(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    try:
        with open_regular(path) as handle:
            array = np.load(handle, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PredictError(f"Cannot read {path} as a .npy array: {error}") from None
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or tuple(array.shape[1:]) != shape:
        raise PredictError(
            f"{path} holds an array of shape {array.shape}; expected (N, {shape[0]}, {shape[1]}, {shape[2]}) "
            "or one image of shape (H, W, C)."
        )
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
            raise PredictError(f"{path} holds {array.dtype} values; expected raw uint8 pixels 0..255.")
        array = array.astype(np.uint8)
    return array


def _load_image(path: Path, shape: tuple[int, int, int], convert_channels: bool) -> tuple[np.ndarray, str | None]:
    height, width, channels = shape
    try:
        image = load_image(path)
    except ImageFileError as error:
        raise PredictError(str(error)) from None
    if image.size != (width, height):
        raise PredictError(
            f"{path} is {image.size[0]}x{image.size[1]} (width x height); the model takes {width}x{height}. "
            "Resize or crop it first."
        )
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode not in _EIGHT_BIT_MODES:
        raise PredictError(f"{path} has pixel mode {image.mode}; expected 8-bit grayscale or RGB.")
    note = None
    found = len(image.getbands())
    if found != channels:
        if not convert_channels or channels not in _CHANNEL_MODES:
            raise PredictError(
                f"{path} has {found} channel(s) (mode {image.mode}); the model takes {channels}. "
                "Pass --convert-channels to convert between RGB(A) and grayscale."
            )
        note = f"{path}: converted {image.mode} to {_CHANNEL_MODES[channels]} ({found} -> {channels} channels)"
        image = image.convert(_CHANNEL_MODES[channels])
    array = np.asarray(image, dtype=np.uint8)
    return (array[..., None] if array.ndim == 2 else array), note
