"""Hostile image files shared by the data and predict tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_bomb(path: Path, side: int = 100_000) -> None:
    """Write a PNG of a few dozen bytes whose header declares ``side`` x ``side`` 8-bit grayscale pixels.

    Args:
        path: file to write.
        side: declared width and height.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
