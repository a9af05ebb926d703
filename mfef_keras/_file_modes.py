"""Temporary files and folders that end up as outputs get the modes the user's umask gives ordinary files.

`tempfile` makes them private (0600 and 0700) whatever the umask, so a run or an export renamed into
place from one would be unreadable to the user's team, and to the Docker image's non-root predict
stage that copies the export. Standard library only: the zoo and ``mfef predict`` import it.
"""

from __future__ import annotations

import os
import threading

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask: read from /proc where Linux tells it, else set and restored under a lock."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    # Other threads creating files in between would get umask 0: the lock keeps our own out.
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def share_like_umask(path: str | os.PathLike | int, directory: bool = False) -> None:
    """Give ``path`` (or an open file descriptor) the mode a plain ``open``/``mkdir`` would have given it.

    Args:
        path: a file or folder, or a file descriptor.
        directory: whether it is a folder (0777 before the umask) rather than a file (0666).
    """
    mode = (0o777 if directory else 0o666) & ~current_umask()
    if isinstance(path, int):
        os.fchmod(path, mode)
    else:
        os.chmod(path, mode)
