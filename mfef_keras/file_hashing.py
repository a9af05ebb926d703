"""The sha256 of a file: what the zoo pins its presets and archives by, and what an export records of its artefacts.

Standard library only: the zoo and ``mfef predict`` import it.
"""

from __future__ import annotations

import hashlib
import os

from mfef_keras._regular_files import open_regular

# Read in chunks, so hashing a large archive or ONNX file does not hold it in memory.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes.

    Args:
        path: the file; a link or anything but a regular file is refused (`open_regular`).
    """
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
