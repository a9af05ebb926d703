"""Image files and ``.npy`` batches read for ``mfef predict``, checked against the model's input size."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mfef_keras._regular_files import open_regular
from mfef_keras.data.image_files import ImageFileError, decode_image, load_image
from mfef_keras.export.errors import PredictError
from mfef_keras.export.npy_files import check_npy_sizes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Modes whose pixels are 8-bit channels; palette and 1-bit images are first expanded to one of them.
_EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA")
_CHANNEL_MODES = {1: "L", 3: "RGB"}


def load_images(
    paths: Sequence[str | Path], image_shape: Sequence[int], resize: bool = True
) -> tuple[np.ndarray, list[str], list[str]]:
    """Read PNG/JPEG files and ``.npy`` batches into one uint8 NHWC batch.

    An image file of another mode or size is converted (RGB(A) <-> grayscale) and resized (bilinear, as image
    folders are for training) to the model's input, and each change is reported; with ``resize=False`` it is
    refused instead. ``.npy`` batches must have the model's shape. Files are read as for training
    (`mfef_keras.data.image_files.load_image`): regular files only, at most `MAX_IMAGE_PIXELS` pixels, 16-bit
    grayscale scaled to 8 bits.

    Args:
        paths: image files and/or ``.npy`` files holding ``(N, H, W, C)`` or ``(H, W, C)`` uint8 arrays.
        image_shape: ``(height, width, channels)`` the model takes.
        resize: convert and resize image files that do not fit the model; otherwise refuse them.

    Returns:
        ``(images, names, notes)``: the batch, a name per image (``file`` or ``file[i]``), and one note per
        image converted or resized.
    """
    shape = tuple(int(v) for v in image_shape)
    batches, names, notes = [], [], []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if suffix == ".npy":
            batch = _load_npy(path, shape)
            names += [f"{path}[{i}]" for i in range(len(batch))]
        elif suffix in IMAGE_SUFFIXES:
            image, note = _load_image(path, shape, resize)
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
    # The header first: numpy allocates whatever it declares before finding the data missing.
    check_npy_sizes([path])
    try:
        with open_regular(path) as handle:
            array = np.load(handle, allow_pickle=False)
    # EOFError: an empty or cut-short file.
    except (OSError, ValueError, EOFError) as error:
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


def _load_image(path: Path, shape: tuple[int, int, int], resize: bool) -> tuple[np.ndarray, str | None]:
    try:
        image = load_image(path)
    except ImageFileError as error:
        raise PredictError(str(error)) from None
    return _fit_image(image, path, shape, resize)


def decode_images(
    encoded: Sequence[bytes], names: Sequence[str], image_shape: Sequence[int], resize: bool = True
) -> tuple[np.ndarray, list[str]]:
    """Decode PNG/JPEG bytes into one uint8 NHWC batch, converted and resized as `load_images` does files.

    Args:
        encoded: one encoded image per element.
        names: what error messages and notes call each image.
        image_shape: ``(height, width, channels)`` the model takes.
        resize: convert and resize images that do not fit the model; otherwise refuse them.

    Returns:
        ``(images, notes)``: the batch and one note per image converted or resized.
    """
    shape = tuple(int(v) for v in image_shape)
    images, notes = [], []
    for data, name in zip(encoded, names, strict=True):
        try:
            image = decode_image(io.BytesIO(data), name)
        except ImageFileError as error:
            raise PredictError(str(error)) from None
        array, note = _fit_image(image, name, shape, resize)
        images.append(array)
        notes += [note] if note else []
    if not images:
        raise PredictError("No images given.")
    return np.stack(images), notes


def _fit_image(
    image: Image.Image, path: Path | str, shape: tuple[int, int, int], resize: bool
) -> tuple[np.ndarray, str | None]:
    height, width, channels = shape
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode not in _EIGHT_BIT_MODES:
        raise PredictError(f"{path} has pixel mode {image.mode}; expected 8-bit grayscale or RGB.")
    changes = []
    found = len(image.getbands())
    if found != channels:
        if not resize or channels not in _CHANNEL_MODES:
            raise PredictError(
                f"{path} has {found} channel(s) (mode {image.mode}); the model takes {channels}"
                + (" (without --no-resize it is converted)." if channels in _CHANNEL_MODES else ".")
            )
        changes.append(f"converted {image.mode} to {_CHANNEL_MODES[channels]} ({found} -> {channels} channels)")
        image = image.convert(_CHANNEL_MODES[channels])
    if image.size != (width, height):
        if not resize:
            raise PredictError(
                f"{path} is {image.size[0]}x{image.size[1]} (width x height); the model takes {width}x{height} "
                "(without --no-resize it is resized)."
            )
        changes.append(f"resized {image.size[0]}x{image.size[1]} to {width}x{height} (bilinear)")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    note = f"{path}: {', '.join(changes)}" if changes else None
    return (array[..., None] if array.ndim == 2 else array), note
