"""Reading one image file safely, for training folders and `mfef predict` alike (no TensorFlow here).

Only regular files are opened (a FIFO named ``x.png`` would block a reader forever), images declaring more than
`MAX_IMAGE_PIXELS` pixels are refused before their pixels are decoded, and 16-bit grayscale PNGs are scaled to
8 bits rather than clipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mfef_keras._regular_files import NotARegularFile, open_regular

# 8192x8192: far above what a small-image classifier trains on, yet one decode stays under 256 MiB (RGBA). It is
# below PIL's own warning threshold (Image.MAX_IMAGE_PIXELS, ~89.5 M), so our message comes first for most sizes.
MAX_IMAGE_PIXELS = 8192 * 8192
# PIL opens 16-bit grayscale PNGs in these modes (values 0..65535); 16-bit RGB(A) and LA already come as 8-bit.
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# What PIL raises for a broken or truncated file: OSError (UnidentifiedImageError, "image file is truncated"),
# SyntaxError (bad PNG chunks) or ValueError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError)


class ImageFileError(ValueError):
    """An image file that cannot be used: not a regular file, too many pixels, or not decodable."""


def _too_large(path: str | os.PathLike, pixels: str) -> ImageFileError:
    side = int(MAX_IMAGE_PIXELS**0.5)
    return ImageFileError(
        f"{path} declares {pixels} pixels, over the limit of {MAX_IMAGE_PIXELS:,} ({side}x{side}); refused as a "
        "possible decompression bomb."
    )


def _undecodable(path: str | os.PathLike, why: object) -> ImageFileError:
    return ImageFileError(f"Cannot decode image {path}: {why}")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode one image file, with 8-bit channels.

    16-bit grayscale images are scaled to 8 bits (``round(v * 255 / 65535)``); PIL already reduces 16-bit
    RGB(A) and grayscale+alpha to 8 bits. Other modes (palette, 1-bit, RGBA...) are returned as they are.

    Args:
        path: the image file.

    Raises:
        ImageFileError: naming ``path``, when it is not a regular file, declares more than `MAX_IMAGE_PIXELS`
            pixels, or cannot be decoded (unknown format, truncated or corrupt data).
    """
    path = Path(path)
    try:
        file = open_regular(path, "read as an image")
    except NotARegularFile as err:
        raise ImageFileError(str(err)) from None
    except OSError as err:
        raise ImageFileError(f"Cannot read image {path}: {err.strerror}.") from None
    with file:
        return decode_image(file, path)


def decode_image(file: BinaryIO, name: str | os.PathLike) -> Image.Image:
    """Fully decode one image from an open binary file, with 8-bit channels, as `load_image` does.

    Args:
        file: the encoded image (a file or an in-memory buffer such as ``io.BytesIO``).
        name: what error messages call it (a path, or a request's input).

    Raises:
        ImageFileError: naming ``name``, when it declares more than `MAX_IMAGE_PIXELS` pixels or cannot be
            decoded (unknown format, truncated or corrupt data).
    """
    try:
        image = Image.open(file)
    except Image.DecompressionBombError:
        # PIL refuses sizes over twice its own limit inside Image.open, before the size can be read here.
        raise _too_large(name, f"more than {2 * Image.MAX_IMAGE_PIXELS:,}") from None
    except UnidentifiedImageError:
        raise _undecodable(name, "not an image format PIL knows") from None
    except _DECODE_ERRORS as err:
        raise _undecodable(name, err) from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise _too_large(name, f"{width}x{height}")
        try:
            image.load()
        except _DECODE_ERRORS as err:
            raise _undecodable(name, err) from None
        # A copy, because closing the file releases the decoded pixels of `image`.
        return _to_eight_bit(image) if image.mode in _SIXTEEN_BIT_MODES else image.copy()


# round(v * 255 / 65535) for every 16-bit value: a lookup costs one byte per pixel, where float arithmetic on a
# 8192x8192 image took 1.7 GB and seconds.
_EIGHT_BIT = np.rint(np.arange(1 << 16) * (255.0 / 65535.0)).astype(np.uint8)


def _to_eight_bit(image: Image.Image) -> Image.Image:
    # PIL's own convert("L") clips at 255, which turns a 16-bit image into black and white.
    values = np.asarray(image)
    if values.dtype != np.uint16:
        # Mode "I" holds 32-bit integers: out-of-range values clip, as they did before scaling.
        values = np.clip(values, 0, 65535)
    return Image.fromarray(_EIGHT_BIT[values], "L")
