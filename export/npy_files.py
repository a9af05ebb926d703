"""Sizes of ``.npy`` batches read from their headers, so that ``mfef predict`` refuses a huge one before reading it."""

from __future__ import annotations

import math
import os
import tokenize
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfef_keras._regular_files import open_regular
from mfef_keras.export.errors import PredictError

# 4 Gi uint8 pixels is over a million 64x64 RGB images: more is a mistake or a hostile header,
# and numpy would try to allocate all of it at once.
MAX_NPY_BYTES = 4 << 30


def check_npy_sizes(paths: Sequence[str | os.PathLike], limit: int = MAX_NPY_BYTES) -> None:
    """Refuse ``.npy`` batches declaring more than ``limit`` bytes (alone or together) or more than they hold.

    Only the headers are read.

    Args:
        paths: input files; those not ending in ``.npy`` are skipped.
        limit: the most bytes of array data to read.
    """
    total = 0
    for path in map(Path, paths):
        if path.suffix.lower() != ".npy":
            continue
        shape, dtype, held = _header(path)
        declared = math.prod(shape) * dtype.itemsize
        total += declared
        if total > limit:
            claim = f"{path} declares an array of shape {shape} {dtype}: {_gib(declared)}"
            if total != declared:
                claim += f" ({_gib(total)} with the .npy files before it)"
            raise PredictError(
                f"{claim}; mfef predict reads at most {_gib(limit)} of .npy batches: split them into smaller batches."
            )
        if declared > held:
            raise PredictError(
                f"{path} is truncated or corrupt: its header declares an array of shape {shape} {dtype} "
                f"({declared:,} bytes) but the file holds {held:,} bytes of data."
            )


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes after the header) of a ``.npy`` file."""
    try:
        with open_regular(path) as handle:
            major, _ = np.lib.format.read_magic(handle)
            # Format 3.0 differs from 2.0 only by a UTF-8 header, which image arrays (no field names) never need.
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            return shape, dtype, os.fstat(handle.fileno()).st_size - handle.tell()
    # numpy parses the header as a Python literal: a broken one raises SyntaxError or tokenize's TokenError.
    except (OSError, ValueError, SyntaxError, tokenize.TokenError) as error:
        raise PredictError(f"Cannot read {path} as a .npy array: {error}") from None


def _gib(count: int) -> str:
    return f"{count / (1 << 30):.1f} GiB"
