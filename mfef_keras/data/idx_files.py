"""IDX files (the MNIST family's format), gzip-compressed: strict parsing and sha256 checks of the content."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib

import numpy as np

from mfef_keras._regular_files import open_regular

# Type byte of the magic number -> element type; IDX stores multi-byte values big-endian.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# A decompressed file larger than this is refused before it fills memory (the largest MNIST-family file,
# Fashion-MNIST's train images, decompresses to 47,040,016 bytes).
MAX_DECOMPRESSED_BYTES = 1 << 28


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """The array stored in the bytes of an (uncompressed) IDX file.

    The header is two zero bytes, a type byte, the number of dimensions, then one big-endian uint32 per
    dimension; the values follow and must fill the rest of the file exactly.

    Args:
        data: the file's content.
        name: how to name the file in errors (its path).

    Returns:
        A read-only array of the stored shape, in native byte order.

    Raises:
        ValueError: naming ``name``, when the magic number is wrong or the size disagrees with the header.
    """
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_DTYPES or data[3] == 0:
        raise ValueError(
            f"{name} is not an IDX file: its magic number is {data[:4].hex() or 'missing'}, expected 0000 "
            f"followed by a type byte ({', '.join(f'{code:02x}' for code in IDX_DTYPES)}) and a non-zero "
            "number of dimensions."
        )
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise ValueError(f"{name} is truncated: {len(data)} bytes, shorter than its {header_bytes}-byte header.")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    # Python integers: four dimensions near 2**32 overflow numpy's int64 into a size that could look right.
    expected = header_bytes + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"{name} is {problem}: a {'x'.join(map(str, shape))} array of {dtype.name} needs {expected:,} bytes "
            f"with the header, the file has {len(data):,}."
        )
    array = np.frombuffer(data, dtype, offset=header_bytes).reshape(shape)
    if dtype.byteorder == ">":
        array = array.astype(dtype.newbyteorder("="))
        array.flags.writeable = False
    return array


def read_gzip(path: str | os.PathLike, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """The decompressed content of a gzip file.

    Args:
        path: the ``.gz`` file.
        max_bytes: refuse content larger than this (a decompression bomb or the wrong file).

    Raises:
        ValueError: naming ``path``, when it is not gzip data, is truncated or corrupt, or decompresses to
            more than ``max_bytes``.
    """
    try:
        with open_regular(path) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as handle:
            data = handle.read(max_bytes + 1)
    # BadGzipFile (an OSError) for a bad header or CRC, EOFError for a truncated stream, zlib.error for
    # corrupt deflate data; a missing or unreadable file stays an OSError of its own.
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is not a complete gzip file ({error}).") from None
    if len(data) > max_bytes:
        raise ValueError(f"{path} decompresses to more than {max_bytes:,} bytes: it is not the expected file.")
    return data


def read_idx_gz(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """The array of a gzip-compressed IDX file, after checking the sha256 of its decompressed content.

    The content is hashed rather than the ``.gz`` file because the same data is distributed with different
    gzip headers (Debian's dataset-fashion-mnist recompressed the upstream files). Hashing the bytes that
    are then parsed also leaves no window for the file to change between the check and the read.

    Args:
        path: the ``.gz`` file.
        sha256: expected hex sha256 of the decompressed content; None skips the check.

    Raises:
        ValueError: naming ``path``, when it is not complete gzip data, fails the hash check or is not a
            well-formed IDX file.
    """
    data = read_gzip(path)
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise ValueError(
                f"{path} is not the expected file: the sha256 of its decompressed content is {actual}, "
                f"expected {sha256.lower()}."
            )
    return parse_idx(data, str(path))
