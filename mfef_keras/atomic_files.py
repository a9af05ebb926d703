"""Files and folders that appear whole or not at all: built beside their destination, then renamed into place.

A reader (or a resumed run) never sees half a file or half a folder, a kill leaves only a hidden leftover
named ``.<name>.<8 random characters>`` (``.tmp`` added for a file) that the next owner sweeps, and a failure
removes what it built: left behind, it could keep a full disk full. The rename replaces a symbolic link at
the destination rather than writing through it (see `mfef_keras._regular_files`). Standard library only: the
zoo imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mfef_keras._file_modes import share_like_umask


@contextmanager
def atomic_file(path: str | os.PathLike, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary handle on a new temporary file beside ``path``, synced and renamed over ``path`` on success.

    Args:
        path: the file to write; its folder must exist.
        mode: the file's permission bits; None gives what the umask gives new files, not the temporary
            file's private 0600.

    Yields:
        The open temporary file, to write ``path``'s content to.
    """
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            if mode is None:
                share_like_umask(handle.fileno())
            else:
                os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            # Durable before it is renamed in: after a crash the name holds the old content or the new, never none.
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through `atomic_file`.

    Args:
        path: the file to write; its folder must exist.
        data: its new content.
        mode: its permission bits; None gives what the umask gives new files.
    """
    with atomic_file(path, mode) as handle:
        handle.write(data)


def write_json_atomic(path: str | os.PathLike, data: dict, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` as indented JSON with sorted keys, through `atomic_file`.

    Args:
        path: the file to write; its folder must exist.
        data: a JSON object; values JSON cannot hold are written as their ``str``.
        mode: its permission bits; None gives what the umask gives new files.
    """
    write_bytes_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode(), mode)


def replace_directory(staging: Path, target: Path) -> None:
    """Put the folder ``staging`` in place as ``target``, deleting whatever ``target`` held before.

    Args:
        staging: the finished folder.
        target: where it belongs, on the same filesystem.
    """
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


@contextmanager
def staged_directory(
    target: str | os.PathLike,
    prefix: str | None = None,
    mode: int | None = None,
    install: Callable[[Path, Path], None] = replace_directory,
) -> Iterator[Path]:
    """A new hidden folder beside ``target`` to build it in, installed as ``target`` when the block succeeds.

    The staging folder is removed on failure, and after ``install`` if that left it there (an ``install``
    may move out only part of it).

    Args:
        target: the folder to produce; its parent is created if missing.
        prefix: the start of the staging folder's name; None gives ``.<target's name>.``.
        mode: the staging folder's permission bits; None gives what the umask gives new folders, not
            `tempfile`'s private 0700.
        install: called with the staging folder and ``target`` once the block has built it.

    Yields:
        The staging folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}." if prefix is None else prefix, dir=target.parent))
    try:
        if mode is None:
            share_like_umask(staging, directory=True)
        else:
            staging.chmod(mode)
        yield staging
        install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
