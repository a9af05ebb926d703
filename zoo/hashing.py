"""sha256 and size records of files, and the checks that compare a file with its record."""

from __future__ import annotations

import os
from pathlib import Path

from mfef_keras.file_hashing import sha256_file
from mfef_keras.zoo.errors import IntegrityError


def file_record(path: str | os.PathLike) -> dict:
    """``{"sha256": ..., "size": ...}`` of a file."""
    return {"sha256": sha256_file(path), "size": Path(path).stat().st_size}


def check_file(path: str | os.PathLike, sha256: str, size: int | None = None, label: str | None = None) -> None:
    """Raise `IntegrityError` unless ``path`` has ``size`` bytes (checked first: it is cheap) and hash ``sha256``.

    Args:
        path: the file to check.
        sha256: the expected hex sha256.
        size: the expected size in bytes, if known.
        label: how to name the file in the error (default: its path).
    """
    label = label or str(path)
    if not Path(path).is_file():
        raise IntegrityError(f"{label} is missing.", file=label, expected=sha256, actual=None)
    actual_size = Path(path).stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(
            f"{label} has the wrong size: expected {size} bytes, got {actual_size}.",
            file=label,
            expected=str(size),
            actual=str(actual_size),
        )
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise IntegrityError(
            f"{label} failed its sha256 check: expected {sha256.lower()}, got {actual}.",
            file=label,
            expected=sha256.lower(),
            actual=actual,
        )
